//! `end`: finish the flow early with an outcome (e.g. `no_files` when a listing is empty).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::compile::FlowCx;
use crate::run::{Exec, Outcome, Scope, StepError, StepResult};

/// Configuration of an `end` step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndStep {
    /// The run's outcome.
    pub outcome: EndOutcome,
}

/// Outcomes an `end` step may set.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndOutcome {
    /// Nothing to do.
    NoFiles,
    /// Done.
    Succeeded,
}

/// A compiled `end` step.
#[derive(Debug)]
pub struct EndPlan {
    outcome: Outcome,
}

impl EndStep {
    /// Checks the step.
    pub fn compile(&self, _cx: &mut FlowCx<'_>, _ptr: &str) -> EndPlan {
        EndPlan {
            outcome: match self.outcome {
                EndOutcome::NoFiles => Outcome::NoFiles,
                EndOutcome::Succeeded => Outcome::Succeeded,
            },
        }
    }
}

impl EndPlan {
    /// Ends.
    pub fn run(&self, _ex: &Exec<'_>, _scope: &mut Scope) -> Result<StepResult, StepError> {
        Ok(StepResult::End(self.outcome))
    }
}
