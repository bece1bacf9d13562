//! Secrets a project definition names: `container-auth`, `script-repos.*.token` (`:`-separated) and
//! `webhooks[].secret_name`. The definition holds only names; values come with the trigger (JobServ stores
//! them per trigger), so the server checks them with [`ProjectDefinition::check_secrets`] before starting a
//! build.
use super::error::{DefinitionError, Issue};
use super::schema::{ProjectDefinition, RunScript};
use super::validate::trigger_edges;
use std::collections::BTreeSet;

/// One place a secret is named.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretUse {
    pub secret: String,
    /// Path of the key naming it, e.g. `triggers/git/runs/0/container-auth`.
    pub path: String,
}

impl ProjectDefinition {
    /// Every secret name the definition uses.
    pub fn required_secrets(&self) -> BTreeSet<String> {
        self.secret_uses(None)
            .into_iter()
            .map(|u| u.secret)
            .collect()
    }

    /// The secrets a build started by `trigger_name` needs: its runs', its webhooks', and those of every trigger
    /// it can chain to (chained runs get the starting trigger's secrets, as in JobServ).
    pub fn required_secrets_for(
        &self,
        trigger_name: &str,
    ) -> Result<BTreeSet<String>, DefinitionError> {
        if self.trigger(trigger_name).is_none() {
            return Err(DefinitionError::UnknownTrigger(trigger_name.to_owned()));
        }
        let reachable = self.reachable_triggers(trigger_name);
        Ok(self
            .secret_uses(Some(&reachable))
            .into_iter()
            .map(|u| u.secret)
            .collect())
    }

    /// Fails with one issue per place (anywhere in the definition) that names a secret missing from
    /// `available`.
    pub fn check_secrets(&self, available: &BTreeSet<String>) -> Result<(), DefinitionError> {
        missing(self.secret_uses(None), available)
    }

    /// [`Self::check_secrets`] limited to what a build started by `trigger_name` needs.
    pub fn check_trigger_secrets(
        &self,
        trigger_name: &str,
        available: &BTreeSet<String>,
    ) -> Result<(), DefinitionError> {
        if self.trigger(trigger_name).is_none() {
            return Err(DefinitionError::UnknownTrigger(trigger_name.to_owned()));
        }
        let reachable = self.reachable_triggers(trigger_name);
        missing(self.secret_uses(Some(&reachable)), available)
    }

    /// Where secrets are named; limited to the given triggers (and the script repos their runs use).
    pub fn secret_uses(&self, triggers: Option<&BTreeSet<String>>) -> Vec<SecretUse> {
        let mut uses = BTreeSet::new();
        let mut repos = BTreeSet::new();
        for trigger in &self.triggers {
            if triggers.is_some_and(|set| !set.contains(&trigger.name)) {
                continue;
            }
            for (i, run) in trigger.runs.iter().enumerate() {
                if let Some(auth) = &run.container_auth {
                    uses.insert(SecretUse {
                        secret: auth.clone(),
                        path: format!("triggers/{}/runs/{i}/container-auth", trigger.name),
                    });
                }
                if let RunScript::Repo { name, .. } = &run.script {
                    repos.insert(name.as_str());
                }
            }
            for (i, hook) in trigger.webhooks.iter().enumerate() {
                uses.insert(SecretUse {
                    secret: hook.secret_name.clone(),
                    path: format!("triggers/{}/webhooks/{i}/secret_name", trigger.name),
                });
            }
        }
        for (name, repo) in &self.script_repos {
            if triggers.is_some() && !repos.contains(name.as_str()) {
                continue;
            }
            for secret in repo.token_secrets() {
                uses.insert(SecretUse {
                    secret,
                    path: format!("script-repos/{name}/token"),
                });
            }
        }
        uses.into_iter().collect()
    }

    /// `trigger_name` and every trigger a build started by it can chain to.
    pub fn reachable_triggers(&self, trigger_name: &str) -> BTreeSet<String> {
        let edges = trigger_edges(self);
        let mut seen = BTreeSet::new();
        let mut todo = vec![trigger_name.to_owned()];
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(children) = edges.get(name.as_str()) {
                todo.extend(children.iter().cloned());
            }
        }
        seen
    }
}

fn missing(uses: Vec<SecretUse>, available: &BTreeSet<String>) -> Result<(), DefinitionError> {
    let issues: Vec<Issue> = uses
        .into_iter()
        .filter(|u| !available.contains(&u.secret))
        .map(|u| Issue::at_path(u.path, format!("secret `{}` is not defined", u.secret)))
        .collect();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(DefinitionError::Invalid(issues))
    }
}

#[cfg(test)]
mod tests {
    use crate::project::parse_project;
    use std::collections::BTreeSet;

    const YAML: &str = "\
timeout: 1
scripts: {s: x}
script-repos:
  tools: {clone-url: /srv/tools.git, token: 'tok-a:tok-b'}
  unused: {clone-url: /srv/unused.git, token: tok-unused}
triggers:
  - name: a
    type: simple
    webhooks: [{url: 'https://h/x', secret_name: hook}]
    runs:
      - name: r
        container: c
        container-auth: registry
        host-tag: h
        script: s
        triggers: [{name: b}]
  - name: b
    type: simple
    runs:
      - {name: rb, container: c, host-tag: h, script-repo: {name: tools, path: x.sh}}
  - name: c
    type: simple
    runs:
      - {name: rc, container: c, host-tag: h, script: s}
";

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn secrets_are_collected_per_project_and_per_trigger_chain() {
        let def = parse_project(YAML).expect("valid");
        assert_eq!(
            def.required_secrets(),
            set(&["hook", "registry", "tok-a", "tok-b", "tok-unused"])
        );
        // `a` chains to `b`, whose run clones `tools`.
        assert_eq!(
            def.required_secrets_for("a").expect("exists"),
            set(&["hook", "registry", "tok-a", "tok-b"])
        );
        assert_eq!(def.required_secrets_for("c").expect("exists"), set(&[]));
        assert!(def.required_secrets_for("zz").is_err());
    }

    #[test]
    fn check_names_each_missing_secret_and_where() {
        let def = parse_project(YAML).expect("valid");
        let err = def
            .check_trigger_secrets("a", &set(&["hook", "registry", "tok-a"]))
            .expect_err("tok-b missing");
        let issues = err.issues();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].location.to_string(), "script-repos/tools/token");
        assert!(issues[0].message.contains("`tok-b`"));
        assert!(def.check_trigger_secrets("c", &set(&[])).is_ok());
        assert!(def.check_secrets(&def.required_secrets()).is_ok());
    }
}
