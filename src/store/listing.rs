//! Listing pages cut from an ordered key set, as S3 cuts them (prefix, `start_after`,
//! delimiter, page size): the shared logic of backends that list by themselves.

use super::{ListPage, ListRequest, ObjectMeta};

/// Builds the next listing page from an ordered key set: the shared logic of backends that
/// list by themselves (local store, test mock). `entries` must be sorted by key.
pub fn page_from_sorted(
    entries: &[ObjectMeta],
    req: &ListRequest,
    token: Option<&str>,
) -> ListPage {
    let max = req.max_keys.unwrap_or(1000).clamp(1, 1000);
    let after = token.or(req.start_after.as_deref());
    let start = match after {
        Some(a) => entries.partition_point(|e| e.key.as_str() <= a),
        None => entries.partition_point(|e| e.key.as_str() < req.prefix.as_str()),
    };
    let mut page = ListPage::default();
    let mut last: Option<String> = None;
    let mut i = start;
    while i < entries.len() {
        let e = &entries[i];
        if !e.key.starts_with(&req.prefix) {
            if e.key.as_str() > req.prefix.as_str() {
                break;
            }
            i += 1;
            continue;
        }
        if page.objects.len() + page.prefixes.len() >= max {
            page.next = last.clone();
            return page;
        }
        let rest = &e.key[req.prefix.len()..];
        match req
            .delimiter
            .as_deref()
            .and_then(|d| rest.find(d).map(|p| (d, p)))
        {
            Some((d, pos)) => {
                let cp = format!("{}{}", req.prefix, &rest[..pos + d.len()]);
                // Skip every key under this common prefix; the token is the prefix itself
                // followed by the highest char, so the next page starts after them.
                while i < entries.len() && entries[i].key.starts_with(&cp) {
                    i += 1;
                }
                last = Some(format!("{cp}\u{10FFFF}"));
                page.prefixes.push(cp);
            }
            None => {
                last = Some(e.key.clone());
                page.objects.push(e.clone());
                i += 1;
            }
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(keys: &[&str]) -> Vec<ObjectMeta> {
        let mut v: Vec<_> = keys.iter().map(|k| ObjectMeta::listed(*k, 1)).collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    #[test]
    fn pages_follow_prefix_start_after_and_delimiter() {
        let e = entries(&["a/1", "a/2", "a/x/1", "a/x/2", "a/y", "b/1"]);
        let req = ListRequest {
            prefix: "a/".into(),
            delimiter: Some("/".into()),
            ..Default::default()
        };
        let p = page_from_sorted(&e, &req, None);
        let keys: Vec<_> = p.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a/1", "a/2", "a/y"]);
        assert_eq!(p.prefixes, ["a/x/"]);
        assert!(p.next.is_none());

        let req = ListRequest {
            prefix: "a/".into(),
            start_after: Some("a/2".into()),
            max_keys: Some(1),
            ..Default::default()
        };
        let p = page_from_sorted(&e, &req, None);
        assert_eq!(p.objects[0].key, "a/x/1");
        let p2 = page_from_sorted(&e, &req, p.next.as_deref());
        assert_eq!(p2.objects[0].key, "a/x/2");
    }
}
