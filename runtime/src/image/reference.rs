//! Image names: validation, the default `:latest` tag, and names from index.json annotations.

use super::error::{ImageError, LoadProblem};

/// The longest name accepted (without the tag), as Docker.
const MAX_NAME: usize = 255;
/// The longest tag accepted, as Docker.
const MAX_TAG: usize = 128;

/// Validates an image name and adds `:latest` when it has no tag: `web` -> `web:latest`,
/// `docker.io/library/web:1` stays as written (no registry or `library/` is added). Refuses
/// empty names, whitespace and control characters, `..`, uppercase outside the registry
/// host, digests (`@sha256:...`; use the image id instead) and over-long names or tags.
pub fn normalize_reference(s: &str) -> Result<String, ImageError> {
    let bad = |reason| ImageError::InvalidReference {
        reference: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains whitespace or control characters"));
    }
    if s.contains("..") {
        return Err(bad("it contains `..`"));
    }
    if s.contains('@') {
        return Err(bad(
            "digest references are not supported; use the image id (sha256:...)",
        ));
    }
    let last_slash = s.rfind('/');
    let (name, tag) = match s.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            (&s[..colon], &s[colon + 1..])
        }
        _ => (s, "latest"),
    };
    if name.is_empty() {
        return Err(bad("the name before the tag is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(bad("the name is longer than 255 characters"));
    }
    check_tag(tag).map_err(bad)?;
    let parts: Vec<&str> = name.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 && parts.len() > 1 && is_registry_host(part) {
            check_host(part).map_err(bad)?;
        } else {
            check_component(part).map_err(bad)?;
        }
    }
    Ok(format!("{name}:{tag}"))
}

fn is_registry_host(part: &str) -> bool {
    part.contains('.') || part.contains(':') || part == "localhost"
}

fn check_host(part: &str) -> Result<(), &'static str> {
    let (host, port) = match part.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (part, None),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        || host.starts_with(['.', '-'])
        || host.ends_with(['.', '-'])
    {
        return Err("the registry host is not a valid host name");
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|c| c.is_ascii_digit()) {
            return Err("the registry port is not a number");
        }
    }
    Ok(())
}

fn check_component(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("it has an empty path component");
    }
    if part.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err("the name must be lowercase");
    }
    if !part
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err("the name may hold only a-z, 0-9, `.`, `_`, `-` and `/`");
    }
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(part.bytes().next()) || !alnum(part.bytes().last()) {
        return Err("each path component must start and end with a letter or digit");
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), &'static str> {
    if tag.is_empty() {
        return Err("the tag after `:` is empty");
    }
    if tag.len() > MAX_TAG {
        return Err("the tag is longer than 128 characters");
    }
    let first_ok = tag
        .bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
    if !first_ok
        || !tag
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return Err(
            "the tag may hold only A-Z, a-z, 0-9, `.`, `_`, `-`, not starting with `.` or `-`",
        );
    }
    Ok(())
}

/// The image name an index.json `org.opencontainers.image.ref.name` annotation gives, if any.
///
/// Tools write either a full name (`web:1`, `docker.io/library/web:1`) or only a tag
/// (`skopeo copy ... oci:DIR:latest` writes `latest`). A value with a `/` or `:` is a name;
/// a single word is taken as a bare tag, so no name, when it looks like one (`latest`, a
/// version like `1.2` or `v2`, or anything not valid as a lowercase name), and as a name
/// otherwise (`web` -> `web:latest`). Pass `tag` to `load` when that guess is wrong.
pub(crate) fn annotation_name(value: &str) -> Result<Option<String>, LoadProblem> {
    let bad = |e: ImageError| LoadProblem::BadName {
        name: value.to_string(),
        reason: match e {
            ImageError::InvalidReference { reason, .. } => reason.to_string(),
            other => other.to_string(),
        },
    };
    if value.contains('/') || value.contains(':') {
        return normalize_reference(value).map(Some).map_err(bad);
    }
    if is_bare_tag(value) {
        return Ok(None);
    }
    normalize_reference(value).map(Some).map_err(bad)
}

fn is_bare_tag(word: &str) -> bool {
    let mut bytes = word.bytes();
    let first = bytes.next();
    let second = bytes.next();
    word == "latest"
        || first.is_some_and(|c| c.is_ascii_digit())
        || (first == Some(b'v') && second.is_some_and(|c| c.is_ascii_digit()))
        || check_component(word).is_err()
}

/// How a reference names an image by id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum IdRef<'a> {
    /// A full `sha256:<64 hex>`.
    Full(&'a str),
    /// A hex prefix of at least 12 characters (with or without `sha256:`).
    Prefix(&'a str),
}

/// Whether `s` is an image id or id prefix; the hex part.
pub(crate) fn id_ref(s: &str) -> Option<IdRef<'_>> {
    let (explicit, hex) = match s.strip_prefix("sha256:") {
        Some(hex) => (true, hex),
        None => (false, s),
    };
    let is_hex = |h: &str| {
        h.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    if !is_hex(hex) || hex.len() < 12 || hex.len() > 64 {
        return None;
    }
    if explicit && hex.len() == 64 {
        Some(IdRef::Full(hex))
    } else {
        Some(IdRef::Prefix(hex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_reference("web").unwrap(), "web:latest");
        assert_eq!(normalize_reference("web:1").unwrap(), "web:1");
        assert_eq!(
            normalize_reference("docker.io/library/web:1").unwrap(),
            "docker.io/library/web:1"
        );
        assert_eq!(
            normalize_reference("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            normalize_reference("rmtest/busybox:1").unwrap(),
            "rmtest/busybox:1"
        );
        assert_eq!(
            normalize_reference("a_b-c.d:V1.0_x").unwrap(),
            "a_b-c.d:V1.0_x"
        );
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            " web",
            "web 1",
            "we\nb",
            "../web",
            "a/../b",
            "web:..",
            "Web",
            "web:",
            ":1",
            "/web",
            "web/",
            "a//b",
            "web@sha256:0000",
            "web:-x",
            "-web",
            "we$b",
            "web:1:2",
        ] {
            let err = normalize_reference(bad);
            assert!(
                matches!(err, Err(ImageError::InvalidReference { .. })),
                "{bad:?} gave {err:?}"
            );
        }
        assert!(normalize_reference(&"a".repeat(256)).is_err());
        assert!(normalize_reference(&format!("a:{}", "t".repeat(129))).is_err());
    }

    #[test]
    fn annotation_names() {
        assert_eq!(annotation_name("latest").unwrap(), None);
        assert_eq!(annotation_name("1.2").unwrap(), None);
        assert_eq!(annotation_name("v2").unwrap(), None);
        assert_eq!(annotation_name("Foo").unwrap(), None);
        assert_eq!(
            annotation_name("web").unwrap().as_deref(),
            Some("web:latest")
        );
        assert_eq!(
            annotation_name("docker.io/library/web:1")
                .unwrap()
                .as_deref(),
            Some("docker.io/library/web:1")
        );
        assert!(annotation_name("a/../b:1").is_err());
    }

    #[test]
    fn id_refs() {
        let full = "sha256:".to_string() + &"ab".repeat(32);
        assert_eq!(id_ref(&full), Some(IdRef::Full(&full[7..])));
        assert_eq!(id_ref("abcdef012345"), Some(IdRef::Prefix("abcdef012345")));
        assert_eq!(
            id_ref("sha256:abcdef012345"),
            Some(IdRef::Prefix("abcdef012345"))
        );
        assert_eq!(id_ref("abcdef01234"), None);
        assert_eq!(id_ref("web:latest"), None);
        assert_eq!(id_ref("ABCDEF012345"), None);
    }
}
