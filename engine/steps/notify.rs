//! `notify`: send an email through a mail connection (SMTP, or the `.eml` outbox).
//!
//! `to` is a comma-separated list (as lookups hold them). A dry run only reports the email
//! it would send.
//!
//! A notification never decides a run's outcome: when the email cannot be built (a template
//! fails, no recipient) or sent (the relay is down, refuses it, the connection cannot be
//! opened), the step records an [`Event::EmailFailed`] warning, logs it, and succeeds with
//! `sent_to: null` and the reason in `error`. So a dead mail relay never makes a successful
//! transfer look failed, and a failed run stays failed — with its error in the report even
//! when the error email could not go out.

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
    /// Sends; a failure is recorded as a warning, never returned (see the module docs).
    pub async fn run(&self, ex: &Exec<'_>, scope: &mut Scope) -> Result<Value, StepError> {
        let mut to = Vec::new();
        let mut subject = String::new();
        match self.send(ex, scope, &mut to, &mut subject).await {
            Ok(sent_to) => {
                ex.event(Event::Emailed {
                    to: to.clone(),
                    subject: subject.clone(),
                });
                Ok(json!({ "to": to, "subject": subject, "sent_to": sent_to }))
            }
            Err(e) => {
                tracing::warn!(connection = %self.connection, subject = %subject, error = %e.message,
                    "the email was not sent; the run goes on");
                ex.event(Event::EmailFailed {
                    to: to.clone(),
                    subject: subject.clone(),
                    message: e.message.clone(),
                });
                Ok(json!({ "to": to, "subject": subject, "sent_to": null, "error": e.message }))
            }
        }
    }

    /// Builds and sends the email, filling in `to` and `subject` as soon as they are known.
    async fn send(
        &self,
        ex: &Exec<'_>,
        scope: &Scope,
        to: &mut Vec<String>,
        subject: &mut String,
    ) -> Result<String, StepError> {
        *to = split_addresses(&ex.render(&self.to, scope)?);
        *subject = ex.render(&self.subject, scope)?.trim().to_string();
        let email = Email {
            from: ex.render(&self.from, scope)?.trim().to_string(),
            to: to.clone(),
            subject: subject.clone(),
            body: ex.render(&self.body, scope)?,
        };
        if email.to.is_empty() {
            return Err(StepError::new(
                ErrorKind::Config,
                "the email has no recipients",
            ));
        }
        let mailer = ex.mailer(&self.connection)?;
        if ex.dry_run() {
            ex.show_body(format!("email \"{}\"", email.subject), || {
                email.body.clone()
            });
            return Ok("dry run".to_string());
        }
        mailer
            .send(&email)
            .await
            .map_err(|e| ex.connector_error(&self.connection, e))
    }
}
