//! `notify`: send an email through a mail connection (SMTP, or the `.eml` outbox).
//!
//! `to` and `cc` are comma-separated lists (as lookups hold them). A dry run only reports
//! the email it would send.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::compile::FlowCx;
use crate::connectors::Capability;
use crate::connectors::mail::{Email, split_addresses};
use crate::run::{ErrorKind, Event, Exec, Scope, StepError};
use crate::template::Tpl;

/// Configuration of a `notify` step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyStep {
    /// Name of a mail connection.
    pub connection: String,
    /// Template: the sender address.
    pub from: String,
    /// Template: comma-separated recipients.
    pub to: String,
    /// Template: the subject line.
    pub subject: String,
    /// Template: the plain-text body.
    pub body: String,
}

/// A compiled `notify` step.
#[derive(Debug)]
pub struct NotifyPlan {
    connection: String,
    from: Tpl,
    to: Tpl,
    subject: Tpl,
    body: Tpl,
}

impl NotifyStep {
    /// Checks the step.
    pub fn compile(&self, cx: &mut FlowCx<'_>, ptr: &str) -> NotifyPlan {
        NotifyPlan {
            connection: cx.connection(
                &format!("{ptr}/connection"),
                &self.connection,
                Capability::Mail,
            ),
            from: cx.template(&format!("{ptr}/from"), &self.from),
            to: cx.template(&format!("{ptr}/to"), &self.to),
            subject: cx.template(&format!("{ptr}/subject"), &self.subject),
            body: cx.template(&format!("{ptr}/body"), &self.body),
        }
    }
}

impl NotifyPlan {
    /// Sends.
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<Value, StepError> {
        let email = Email {
            from: ex.render(&self.from, scope)?.trim().to_string(),
            to: split_addresses(&ex.render(&self.to, scope)?),
            subject: ex.render(&self.subject, scope)?.trim().to_string(),
            body: ex.render(&self.body, scope)?,
        };
        if email.to.is_empty() {
            return Err(StepError::new(
                ErrorKind::Config,
                "the email has no recipients",
            ));
        }
        let mailer = ex.mailer(&self.connection)?;
        let sent_to = if ex.dry_run() {
            "dry run".to_string()
        } else {
            mailer
                .send(&email)
                .await
                .map_err(|e| ex.connector_error(&self.connection, e))?
        };
        ex.event(Event::Emailed {
            to: email.to.clone(),
            subject: email.subject.clone(),
        });
        Ok(json!({ "to": email.to, "subject": email.subject, "sent_to": sent_to }))
    }
}
