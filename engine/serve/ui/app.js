// ferry monitoring page: says the page's times in the browser's time zone.
//
// The server renders every time as a <time datetime="…"> element, relative ("3 min ago",
// data-time="ago") or exact ("2026-12-07 00:27:30 UTC", data-time="at"), with the exact UTC
// time as its title; the page is complete without this script. Here each element is said
// again in the browser's zone: the relative text with the same rules as the server's
// (engine/serve/ui.rs `relative`), the exact text and the title with the zone's offset
// ("2026-12-07 13:27:30 GMT+13"). Relative texts are refreshed every 30 seconds.
(() => {
  'use strict';

  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local time';
  const format = new Intl.DateTimeFormat('en-US', {
    year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
    weekday: 'short', timeZoneName: 'shortOffset',
  });

  // The calendar fields of `d` in the browser's zone.
  function fields(d) {
    const f = {};
    for (const p of format.formatToParts(d)) f[p.type] = p.value;
    // the calendar day as a number, to count days between two times
    f.dayNumber = Date.UTC(+f.year, +f.month - 1, +f.day) / 86400000;
    f.date = `${f.year}-${f.month}-${f.day}`;
    f.hm = `${f.hour}:${f.minute}`;
    return f;
  }

  // "2026-12-07 13:27:30 GMT+13" (UTC itself: "… UTC")
  function exact(f) {
    const offset = /^GMT(\+0)?$/.test(f.timeZoneName) ? 'UTC' : f.timeZoneName;
    return `${f.date} ${f.hm}:${f.second} ${offset}`;
  }

  // `t` relative to `now`: the server's rules, the browser's calendar days.
  function relative(t, now) {
    const ft = fields(t);
    const secs = Math.trunc((now - t) / 1000);
    const days = fields(now).dayNumber - ft.dayNumber;
    const n = Math.abs(secs);
    const ahead = secs < 0;
    if (!ahead && n < 5) return 'just now';
    if (n < 60) return ahead ? `in ${n} s` : `${n} s ago`;
    if (n < 3600) return ahead ? `in ${Math.floor(n / 60)} min` : `${Math.floor(n / 60)} min ago`;
    if (days === 0) return ahead ? `in ${Math.floor(n / 3600)} h` : `${Math.floor(n / 3600)} h ago`;
    if (days === 1) return `yesterday ${ft.hm}`;
    if (days === -1) return `tomorrow ${ft.hm}`;
    if (Math.abs(days) < 7) return `${ft.weekday} ${ft.hm}`;
    return `${ft.date} ${ft.hm}`;
  }

  function localize() {
    const now = new Date();
    for (const el of document.querySelectorAll('time[datetime][data-time]')) {
      const t = new Date(el.getAttribute('datetime'));
      if (Number.isNaN(t.getTime())) continue;
      if (!el.dataset.utc) el.dataset.utc = el.getAttribute('title') || '';
      const local = exact(fields(t));
      if (el.dataset.time === 'ago') {
        el.textContent = relative(t, now);
        el.title = el.dataset.utc ? `${local} · ${el.dataset.utc}` : local;
      } else {
        el.textContent = local;
        el.title = el.dataset.utc;
      }
    }
    for (const el of document.querySelectorAll('[data-testid="time-zone"]')) {
      el.textContent = `times in ${zone}`;
      el.title = 'the time zone of this browser';
    }
  }

  localize();
  setInterval(localize, 30000);
})();
