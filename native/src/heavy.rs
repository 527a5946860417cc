//! Attribution's space-saving top-k of one dimension's values by cost (the Python twin and
//! reference: `pipeline.processors.heavy.PyHeavyHitters`, which documents the algorithm; the
//! tests hold the two equal on random streams).
//!
//! Natively the counts are plain f64s beside their values: the Python twin's boxed floats,
//! replaced on every add, cost a cold allocation each for the ~1,000 values a sketch holds.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySet, PyString};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

const OTHER: &str = "__other__";

/// A heap entry: (count when pushed, value), smallest first; ties by value, as Python's
/// tuples compare (UTF-8 byte order is code point order).
#[derive(PartialEq)]
struct Pushed(f64, String);

impl Eq for Pushed {}

impl PartialOrd for Pushed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pushed {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| self.1.cmp(&other.1))
    }
}

#[pyclass(module = "llm_pipeline_native")]
pub struct HeavyHitters {
    #[pyo3(get)]
    k: usize,
    #[pyo3(get)]
    capacity: usize,
    #[pyo3(get, set)]
    folds: u64,
    counts: FastMap<String, (f64, f64)>, // value -> (count, own)
    heap: BinaryHeap<Reverse<Pushed>>,
    // the kept values, each with the str object its labels share: a label set's comparisons
    // downstream (metrics' series lookups) are then identity checks on warm objects
    kept: FastMap<String, Py<PyString>>,
    bar: f64,
}

impl HeavyHitters {
    fn evict_min(&mut self) -> f64 {
        while let Some(Reverse(Pushed(pushed, value))) = self.heap.pop() {
            let Some(&(current, _)) = self.counts.get(&value) else {
                continue; // a stale entry
            };
            if self.kept.contains_key(&value) {
                continue;
            }
            if current == pushed {
                self.counts.remove(&value);
                return current;
            }
            self.heap.push(Reverse(Pushed(current, value))); // grew since pushed: re-file it
        }
        0.0 // unreachable while len(counts) >= capacity > k
    }

    /// `add`: the label when the value keeps its own (its kept str object), else None.
    fn count<'py>(
        &mut self,
        value: &Bound<'py, PyString>,
        weight: f64,
    ) -> PyResult<Option<Bound<'py, PyString>>> {
        let py = value.py();
        let text = value.to_str()?;
        Ok(self.count_text(py, text, value, weight))
    }

    fn count_text<'py>(
        &mut self,
        py: Python<'py>,
        value: &str,
        object: &Bound<'py, PyString>,
        weight: f64,
    ) -> Option<Bound<'py, PyString>> {
        let guaranteed = match self.counts.get_mut(value) {
            Some(entry) => {
                entry.0 += weight;
                entry.1 += weight;
                entry.1
            }
            None => {
                let floor = if self.counts.len() >= self.capacity {
                    self.evict_min()
                } else {
                    0.0
                };
                let count = floor + weight;
                self.counts.insert(value.to_owned(), (count, weight));
                self.heap.push(Reverse(Pushed(count, value.to_owned())));
                weight
            }
        };
        if let Some(canonical) = self.kept.get(value) {
            return Some(canonical.bind(py).clone());
        }
        if self.kept.len() < self.k {
            self.kept.insert(value.to_owned(), object.clone().unbind());
            return Some(object.clone());
        }
        if guaranteed > self.bar {
            let counts = &self.counts;
            let weakest = self
                .kept
                .keys()
                .map(|v| (counts[v].0, v))
                .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
                .map(|(c, v)| (c, v.clone()))
                .expect("k >= 1 values kept");
            self.bar = weakest.0;
            if guaranteed > self.bar {
                self.kept.remove(&weakest.1);
                self.heap.push(Reverse(Pushed(weakest.0, weakest.1)));
                self.kept.insert(value.to_owned(), object.clone().unbind());
                self.bar = 0.0;
                return Some(object.clone());
            }
        }
        self.folds += 1;
        None
    }
}

#[pymethods]
impl HeavyHitters {
    #[new]
    #[pyo3(signature = (k = 100, capacity = None))]
    fn new(k: usize, capacity: Option<usize>) -> PyResult<Self> {
        if k < 1 {
            return Err(PyValueError::new_err("k must be >= 1"));
        }
        let capacity = capacity.filter(|&c| c > 0).unwrap_or(10 * k).max(k + 1);
        Ok(HeavyHitters {
            k,
            capacity,
            folds: 0,
            counts: FastMap::default(),
            heap: BinaryHeap::new(),
            kept: FastMap::default(),
            bar: 0.0,
        })
    }

    /// Count `weight` for `value`; the label it gets: itself when kept, else `__other__`.
    fn add<'py>(
        &mut self,
        value: Bound<'py, PyString>,
        weight: f64,
    ) -> PyResult<Bound<'py, PyString>> {
        let py = value.py();
        Ok(self
            .count(&value, weight)?
            .unwrap_or_else(|| PyString::intern(py, OTHER)))
    }

    /// Per value of `weights` (value -> weight): its label. "" -> ""; a value whose verdict
    /// (`checked`, else `check(value)`) is not "" -> the verdict, uncounted; else `add`.
    fn label_all<'py>(
        &mut self,
        weights: &Bound<'py, PyDict>,
        checked: &Bound<'py, PyDict>,
        check: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let py = weights.py();
        let out = PyDict::new(py);
        let blank = PyString::intern(py, "");
        out.set_item(&blank, &blank)?;
        let other = PyString::intern(py, OTHER);
        for (value, weight) in weights.iter() {
            let value = value.cast_into::<PyString>()?;
            let text = value.to_str()?;
            if text.is_empty() {
                continue;
            }
            let weight: f64 = weight.extract()?;
            // kept values were checked when admitted: `add`'s first steps
            if !self.kept.contains_key(text) {
                let verdict = match checked.get_item(&value)? {
                    Some(v) => v,
                    None => check.call1((&value,))?,
                };
                if !verdict.cast::<PyString>()?.to_str()?.is_empty() {
                    out.set_item(&value, verdict)?;
                    continue;
                }
            }
            match self.count_text(py, text, &value, weight) {
                Some(label) => out.set_item(&value, label)?,
                None => out.set_item(&value, &other)?,
            }
        }
        Ok(out)
    }

    /// The monitored values by estimated weight, largest first (ties by value).
    #[pyo3(signature = (n = None))]
    fn top(&self, n: Option<usize>) -> Vec<(String, f64)> {
        let mut ranked: Vec<(String, f64)> =
            self.counts.iter().map(|(v, c)| (v.clone(), c.0)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(n) = n {
            ranked.truncate(n);
        }
        ranked
    }

    /// The kept values (a copy).
    #[getter]
    fn kept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PySet>> {
        PySet::new(py, self.kept.keys())
    }

    /// value -> [count, own] of each monitored value (a copy).
    #[getter]
    fn counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (v, &(count, own)) in &self.counts {
            out.set_item(v, PyList::new(py, [count, own])?)?;
        }
        Ok(out)
    }
}
