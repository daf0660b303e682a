//! Parsing with a bound on how deep elements nest.
//!
//! html5ever's tree builder scans its stack of open elements for many start tags, so a page
//! of n nested elements costs O(n²) (20,000 nested `<div>`s took 14 s of CPU), and reading
//! the text walks the tree one call per level. The sink below wraps scraper's, records each
//! node's depth as the tree builder attaches it, and the page is fed in chunks so parsing
//! stops soon after the first element deeper than [`MAX_DEPTH`].

use std::borrow::Cow;
use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;

use ego_tree::NodeId;
use html5ever::driver::{self, ParseOpts};
use html5ever::tendril::{StrTendril, TendrilSink};
use html5ever::tree_builder::{ElementFlags, NodeOrText, QuirksMode, TreeSink};
use html5ever::{Attribute, QualName};
use scraper::{Html, HtmlTreeSink};

/// The deepest element nesting a page may have: the 512 levels at which Chromium's parser
/// stops nesting. Real pages stay far below it.
pub(crate) const MAX_DEPTH: usize = 512;

/// How much of the page the parser reads between two depth checks (a few hundred elements
/// at most past the limit).
const CHUNK_BYTES: usize = 4 * 1024;

/// Parses `text` as a document, or `None` when its elements nest deeper than [`MAX_DEPTH`].
pub(super) fn parse_document(text: &str) -> Option<Html> {
    let mut parser = driver::parse_document(DepthLimitedSink::default(), ParseOpts::default());
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(CHUNK_BYTES);
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        parser.process(StrTendril::from_slice(chunk));
        if parser.tokenizer.sink.sink.too_deep.get() {
            return None;
        }
        rest = tail;
    }
    parser.finish()
}

/// scraper's sink, plus the depth of every node attached so far.
struct DepthLimitedSink {
    inner: HtmlTreeSink,
    /// Depth below the document node; nodes not attached yet are absent (depth 0).
    depths: RefCell<HashMap<NodeId, usize>>,
    too_deep: Cell<bool>,
}

impl Default for DepthLimitedSink {
    fn default() -> Self {
        Self {
            inner: HtmlTreeSink::new(Html::new_document()),
            depths: RefCell::default(),
            too_deep: Cell::new(false),
        }
    }
}

impl DepthLimitedSink {
    fn depth(&self, node: &NodeId) -> usize {
        self.depths.borrow().get(node).copied().unwrap_or(0)
    }

    fn set_depth(&self, child: &NodeOrText<NodeId>, depth: usize) {
        if let NodeOrText::AppendNode(id) = child {
            self.record(*id, depth);
        }
    }

    fn record(&self, node: NodeId, depth: usize) {
        if depth > MAX_DEPTH {
            self.too_deep.set(true);
        }
        self.depths.borrow_mut().insert(node, depth);
    }
}

impl TreeSink for DepthLimitedSink {
    type Handle = NodeId;
    type Output = Option<Html>;
    type ElemName<'a> = Ref<'a, QualName>;

    fn finish(self) -> Option<Html> {
        (!self.too_deep.get()).then(|| self.inner.finish())
    }

    fn parse_error(&self, msg: Cow<'static, str>) {
        self.inner.parse_error(msg);
    }

    fn get_document(&self) -> NodeId {
        self.inner.get_document()
    }

    fn elem_name<'a>(&'a self, target: &'a NodeId) -> Ref<'a, QualName> {
        self.inner.elem_name(target)
    }

    fn create_element(&self, name: QualName, attrs: Vec<Attribute>, flags: ElementFlags) -> NodeId {
        self.inner.create_element(name, attrs, flags)
    }

    fn create_comment(&self, text: StrTendril) -> NodeId {
        self.inner.create_comment(text)
    }

    fn create_pi(&self, target: StrTendril, data: StrTendril) -> NodeId {
        self.inner.create_pi(target, data)
    }

    fn append(&self, parent: &NodeId, child: NodeOrText<NodeId>) {
        self.set_depth(&child, self.depth(parent) + 1);
        self.inner.append(parent, child);
    }

    fn append_based_on_parent_node(
        &self,
        element: &NodeId,
        prev_element: &NodeId,
        child: NodeOrText<NodeId>,
    ) {
        // Beside `element` when it has a parent, else under `prev_element`: the deeper bound.
        let depth = self.depth(element).max(self.depth(prev_element) + 1);
        self.set_depth(&child, depth);
        self.inner
            .append_based_on_parent_node(element, prev_element, child);
    }

    fn append_doctype_to_document(
        &self,
        name: StrTendril,
        public_id: StrTendril,
        system_id: StrTendril,
    ) {
        self.inner
            .append_doctype_to_document(name, public_id, system_id);
    }

    fn mark_script_already_started(&self, node: &NodeId) {
        self.inner.mark_script_already_started(node);
    }

    fn pop(&self, node: &NodeId) {
        self.inner.pop(node);
    }

    fn get_template_contents(&self, target: &NodeId) -> NodeId {
        let contents = self.inner.get_template_contents(target);
        self.record(contents, self.depth(target) + 1);
        contents
    }

    fn same_node(&self, x: &NodeId, y: &NodeId) -> bool {
        self.inner.same_node(x, y)
    }

    fn set_quirks_mode(&self, mode: QuirksMode) {
        self.inner.set_quirks_mode(mode);
    }

    fn append_before_sibling(&self, sibling: &NodeId, new_node: NodeOrText<NodeId>) {
        self.set_depth(&new_node, self.depth(sibling));
        self.inner.append_before_sibling(sibling, new_node);
    }

    fn add_attrs_if_missing(&self, target: &NodeId, attrs: Vec<Attribute>) {
        self.inner.add_attrs_if_missing(target, attrs);
    }

    fn remove_from_parent(&self, target: &NodeId) {
        self.inner.remove_from_parent(target);
    }

    fn reparent_children(&self, node: &NodeId, new_parent: &NodeId) {
        // Only the adoption agency algorithm reparents, into a new element that it then
        // appends to `node`. The moved children's descendants keep their recorded depths:
        // the algorithm's loops are bounded, and the walker checks depth again.
        let children: Vec<NodeId> = {
            let html = self.inner.0.borrow();
            html.tree
                .get(*node)
                .map(|n| n.children().map(|c| c.id()).collect())
                .unwrap_or_default()
        };
        let depth = self.depth(new_parent).max(self.depth(node) + 1) + 1;
        for child in children {
            self.record(child, depth);
        }
        self.inner.reparent_children(node, new_parent);
    }
}
