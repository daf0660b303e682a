//! Ingest commits in groups of about `commit_every` chunks, the same way on every backend.

/// Splits planned documents, in order, into groups that each start a new commit once the
/// group before holds at least `every` chunks (`chunks(item)` per document). A document is
/// never split, so a group can exceed `every` by one document's chunks. No empty groups.
pub(crate) fn commit_groups<T>(
    items: Vec<T>,
    every: usize,
    chunks: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut in_group = 0;
    for item in items {
        if groups.is_empty() || in_group >= every.max(1) {
            groups.push(Vec::new());
            in_group = 0;
        }
        in_group += chunks(&item);
        if let Some(g) = groups.last_mut() {
            g.push(item);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::commit_groups;

    #[test]
    fn groups_close_after_enough_chunks_and_keep_documents_whole() {
        let sizes = vec![3, 3, 1, 5, 0, 2];
        let g = commit_groups(sizes, 4, |s| *s);
        assert_eq!(g, vec![vec![3, 3], vec![1, 5], vec![0, 2]]);
        assert!(commit_groups(Vec::<usize>::new(), 4, |s| *s).is_empty());
        // `every` of 0 behaves as 1: one document per group.
        assert_eq!(commit_groups(vec![2, 2], 0, |s| *s), vec![vec![2], vec![2]]);
    }
}
