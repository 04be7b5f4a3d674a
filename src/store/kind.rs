//! What an object is, and the storage class that follows from it: the kinds producers tag
//! their puts with, the storage classes S3 knows, and the per-kind choice over the default
//! (metadata never goes to a class that needs a restore before it can be read).

/// Storage classes as AWS spells them.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
];

/// Classes whose objects need a restore before they can be read.
pub const ARCHIVE_CLASSES: &[&str] = &["GLACIER", "DEEP_ARCHIVE"];

/// What an object is, for its storage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectKind {
    /// Anything else (store put, sync, archive, plugin data): `s3.storage_class`.
    #[default]
    Other,
    /// A base backup's data file.
    Base,
    /// A WAL file.
    Wal,
    /// Our manifests, backup.info, identity files: always readable without a restore.
    Meta,
}

/// Storage classes by kind of object (`s3.storage_classes`), over `s3.storage_class`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageClasses {
    /// `s3.storage_class`.
    pub default: Option<String>,
    /// `s3.storage_classes.base`.
    pub base: Option<String>,
    /// `s3.storage_classes.wal`.
    pub wal: Option<String>,
    /// `s3.storage_classes.meta`.
    pub meta: Option<String>,
}

impl StorageClasses {
    /// The class for an object of `kind` (`None`: the bucket's default, STANDARD). Metadata
    /// never goes to an archive class, whatever the default says.
    pub fn for_kind(&self, kind: ObjectKind) -> Option<&str> {
        let specific = match kind {
            ObjectKind::Other => None,
            ObjectKind::Base => self.base.as_deref(),
            ObjectKind::Wal => self.wal.as_deref(),
            ObjectKind::Meta => self.meta.as_deref(),
        };
        let class = specific.or(self.default.as_deref());
        match kind {
            ObjectKind::Meta if class.is_some_and(|c| ARCHIVE_CLASSES.contains(&c)) => None,
            _ => class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_never_lands_in_an_archive_class() {
        let c = StorageClasses {
            default: Some("DEEP_ARCHIVE".into()),
            wal: Some("STANDARD".into()),
            ..Default::default()
        };
        assert_eq!(c.for_kind(ObjectKind::Base), Some("DEEP_ARCHIVE"));
        assert_eq!(c.for_kind(ObjectKind::Wal), Some("STANDARD"));
        assert_eq!(c.for_kind(ObjectKind::Meta), None);
        assert_eq!(c.for_kind(ObjectKind::Other), Some("DEEP_ARCHIVE"));
        let plain = StorageClasses::default();
        assert_eq!(plain.for_kind(ObjectKind::Base), None);
    }
}
