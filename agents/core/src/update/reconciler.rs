//! The `os` reconciler: `[os]` goes through the apply pipeline like every section, so it
//! is validated with the rest of the document, refused with it, and reverted with it.
//!
//! Applying it only records the target (`os-update/target.json`) and hands it to the
//! [`super::Updater`]: downloading and installing a version takes minutes and changes
//! nothing on the running system (the other slot is not in use), so it runs beside the
//! pipeline, not inside a generation's apply deadline and confirm window.
//!
//! Refused at plan, the whole document with it: what `[os]` says that no node could
//! take (see [`OsSection::validate`]), a version too long for this role's slot labels,
//! and a downgrade without `allow_downgrade`. What depends on the node's history or
//! boot (a version that failed here before, a diskless node) is not a reason to refuse
//! the document's other sections: the updater reports it instead (`os.update`).

use kowabunga_model::{Action, Document, Planned, ReconcileError, Reconciler};
use tokio::sync::watch;

use super::section::{OsSection, SECTION};
use super::staging::{UpdateError, check_request};
use super::state::UpdateDir;
use crate::os_image::OsSource;

/// Drives `[os]`.
pub struct OsReconciler {
    role: String,
    dir: UpdateDir,
    os: OsSource,
    target: watch::Sender<Option<OsSection>>,
}

impl OsReconciler {
    /// `target` is the updater's end ([`super::Updater::new`] takes the receiver).
    pub fn new(
        role: &str,
        dir: UpdateDir,
        os: OsSource,
        target: watch::Sender<Option<OsSection>>,
    ) -> Self {
        Self {
            role: role.to_owned(),
            dir,
            os,
            target,
        }
    }
}

impl Reconciler for OsReconciler {
    type Plan = Option<OsSection>;

    fn name(&self) -> &'static str {
        SECTION
    }

    fn validate(&self, desired: &Document) -> Result<(), ReconcileError> {
        OsSection::from_document(desired)
            .map(drop)
            .map_err(ReconcileError::invalid)
    }

    fn section_schemas(&self) -> Vec<(&'static str, schemars::Schema)> {
        vec![(SECTION, schemars::schema_for!(OsSection))]
    }

    async fn plan(
        &self,
        desired: &Document,
        _in_force: Option<&Document>,
    ) -> Result<Planned<Self::Plan>, ReconcileError> {
        let wanted = OsSection::from_document(desired).map_err(ReconcileError::invalid)?;
        let recorded = self.dir.target().map_err(ReconcileError::observe)?;
        let mut planned = Planned::nothing(wanted.clone());
        let Some(os) = wanted else {
            if recorded.is_some() {
                planned.actions.push(Action(
                    "no OS version asked any more: nothing more is installed or rebooted into"
                        .into(),
                ));
            }
            return Ok(planned);
        };
        if let Some(running) = self.os.read().version {
            match check_request(&self.role, &running, &os.version, os.allow_downgrade) {
                Ok(()) | Err(UpdateError::AlreadyRunning(_)) => {}
                Err(e) => return Err(ReconcileError::invalid(format!("[{SECTION}] {e}"))),
            }
        }
        if recorded.as_ref() != Some(&os) {
            let reboot = match &os.window {
                Some(window) => format!("in the daily window {window} UTC"),
                None => os.reboot.as_str().to_owned(),
            };
            planned.actions.push(Action(format!(
                "run OS version {} (from {}; reboot {reboot})",
                os.version, os.url
            )));
        }
        Ok(planned)
    }

    async fn apply(&self, plan: Self::Plan) -> Result<(), ReconcileError> {
        self.dir
            .set_target(plan.as_ref())
            .map_err(ReconcileError::apply)?;
        self.target.send_replace(plan);
        Ok(())
    }

    async fn check(&self, _desired: &Document) -> Result<(), ReconcileError> {
        // The update is the updater's, judged by the next boot's health gate.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::os_image::{Boot, OsImage, OtherSlot};
    use kowabunga_model::Format;

    fn doc(os: &str) -> Document {
        Document::parse(
            format!(
                "version = 1\nnode = \"kiwi-1\"\nissued_at = \"2026-01-01T00:00:00Z\"\nexpires_at = \"2036-01-01T00:00:00Z\"\n{os}"
            )
            .as_bytes(),
            Format::Toml,
        )
        .unwrap()
    }

    fn os(version: &str, extra: &str) -> String {
        format!(
            "[os]\nversion = \"{version}\"\nurl = \"https://k.example/kiwi/{version}/\"\nreboot = \"now\"\n{extra}"
        )
    }

    fn running(version: &'static str) -> OsSource {
        OsSource::new(move || OsImage {
            image_id: Some("kowabunga-kiwi".into()),
            version: Some(version.into()),
            boot: Boot::Disk,
            other_slot: Some(OtherSlot::Empty),
            updates: "",
            update: None,
        })
    }

    #[tokio::test]
    async fn applying_records_the_target_and_hands_it_to_the_updater() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, mut rx) = watch::channel(None);
        let r = OsReconciler::new("kiwi", UpdateDir::new(tmp.path()), running("0.1.0"), tx);
        let planned = r.plan(&doc(&os("0.2.0", "")), None).await.unwrap();
        assert_eq!(planned.actions.len(), 1, "{:?}", planned.actions);
        assert!(planned.actions[0].0.contains("0.2.0"));
        r.apply(planned.payload).await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().as_ref().unwrap().version, "0.2.0");
        let dir = UpdateDir::new(tmp.path());
        assert_eq!(dir.target().unwrap().unwrap().version, "0.2.0");
        // The same again plans nothing; a document without [os] clears the target.
        let again = r.plan(&doc(&os("0.2.0", "")), None).await.unwrap();
        assert!(again.actions.is_empty(), "{:?}", again.actions);
        let none = r.plan(&doc(""), None).await.unwrap();
        assert_eq!(none.actions.len(), 1);
        r.apply(none.payload).await.unwrap();
        assert_eq!(dir.target().unwrap(), None);
        assert_eq!(*rx.borrow_and_update(), None);
    }

    #[tokio::test]
    async fn a_downgrade_is_refused_at_plan_unless_allowed_and_the_running_version_is_fine() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, _rx) = watch::channel(None);
        let r = OsReconciler::new("kiwi", UpdateDir::new(tmp.path()), running("0.2.0"), tx);
        let err = r.plan(&doc(&os("0.1.9", "")), None).await.unwrap_err();
        assert!(
            err.to_string().contains("[os]") && err.to_string().contains("downgrade"),
            "{err}"
        );
        r.plan(&doc(&os("0.1.9", "allow_downgrade = true\n")), None)
            .await
            .unwrap();
        r.plan(&doc(&os("0.2.0", "")), None).await.unwrap();
        // Too long for kowabunga-kiwi_VERSION_verity (36 characters).
        let err = r
            .plan(&doc(&os("1.2.3-abcdefghijklmnopq", "")), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("label"), "{err}");
        assert!(
            tmp.path().read_dir().unwrap().next().is_none(),
            "plan wrote"
        );
    }
}
