//! `tribute.pull_model`: models from the Hugging Face hub (`tribute::hub`).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::py_err;

/// Finds or downloads, verifies and exports a hub model (`ORG/NAME[/FILE.gguf][@REV][:OPTIONS]`,
/// with or without `hf:`; `:int4`, `:static,fp16` pick what it is exported as); returns what `PulledModel` holds, `dir` being the model
/// directory for `Generator.load`. Blocking, without the GIL: it can take minutes.
#[pyfunction]
#[pyo3(signature = (spec, *, home = None, endpoint = None, python = None, refresh = false, progress = false))]
pub(crate) fn pull_model<'py>(
    py: Python<'py>,
    spec: &str,
    home: Option<PathBuf>,
    endpoint: Option<String>,
    python: Option<PathBuf>,
    refresh: bool,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let spec: tribute::hub::ModelSpec = spec.parse().map_err(py_err)?;
    let mut pull = spec.pull().refresh(refresh).progress(progress);
    if let Some(h) = home {
        pull = pull.home(h);
    }
    if let Some(e) = endpoint {
        pull = pull.endpoint(e);
    }
    if let Some(p) = python {
        pull = pull.python(p);
    }
    let model = py.detach(|| pull.run()).map_err(py_err)?;
    let out = PyDict::new(py);
    out.set_item("repo", &model.repo)?;
    out.set_item("revision", &model.revision)?;
    out.set_item("commit", &model.commit)?;
    out.set_item("file", &model.file)?;
    out.set_item("dir", model.dir.to_string_lossy().into_owned())?;
    out.set_item("cached", model.cached)?;
    Ok(out)
}
