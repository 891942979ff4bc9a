//! A signed training component run by the browser's own WebAssembly engine:
//! its core module ([`CoreModule`]) instantiated with `WebAssembly.Instance`
//! and called through the component model's canonical ABI, written out here
//! for the one world Hearth has (`wit/trainer.wit`): lists and strings go
//! through `cabi_realloc` into the instance's memory, records and results
//! come back through a return pointer, and `cabi_post_*` frees them.
//!
//! The component cannot reach the tab: its module may import only the two
//! resource intrinsics of the trainer interface (answered here), its memory
//! is capped ([`CoreModule::with_memory_cap`]), and every pointer and length
//! it hands back is checked against its memory before it is read. A trap
//! (a JavaScript exception out of a call) poisons the instance.

use std::cell::RefCell;
use std::rc::Rc;

use hearth_worker::{ArchInfo, LayerInfo, ModelConfig, OptimizerConfig, TensorInfo, TrainStats};
use js_sys::{Array, Function, Object, Reflect, Uint8Array, WebAssembly};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

use crate::core_module::CoreModule;

/// The interface the core module's exports are named after.
pub const INTERFACE: &str = "hearth:trainer/trainer@0.1.0";
/// The import module of the resource intrinsics.
const RESOURCE_MODULE: &str = "[export]hearth:trainer/trainer@0.1.0";
const RESOURCE_NEW: &str = "[resource-new]model";
const RESOURCE_DROP: &str = "[resource-drop]model";
/// Longest string or list this reads back (a lying length is refused).
const MAX_READ: u32 = 64 << 20;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The component trapped or broke the ABI: the instance is unusable.
    Trap(String),
    /// The component returned an error (`result::err`).
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Trap(m) => write!(f, "the component trapped: {m}"),
            CallError::Failed(m) => write!(f, "{m}"),
        }
    }
}

type Result<T> = std::result::Result<T, CallError>;

fn trap(e: impl std::fmt::Debug) -> CallError {
    let text = format!("{e:?}");
    CallError::Trap(text.chars().take(300).collect())
}

/// A component compiled by the browser's engine, ready to instantiate.
#[derive(Clone)]
pub struct CompiledComponent {
    module: WebAssembly::Module,
}

impl CompiledComponent {
    /// Takes the trainer's core module out of `component`, caps its memory
    /// at `memory_bytes`, compiles it and checks what it imports and
    /// exports.
    pub fn compile(component: &[u8], memory_bytes: u64) -> std::result::Result<Self, String> {
        let marker = export("create");
        let core = CoreModule::extract(component, &marker)?.with_memory_cap(memory_bytes)?;
        let bytes = Uint8Array::from(core.0.as_slice());
        let module = WebAssembly::Module::new(&bytes)
            .map_err(|e| format!("it does not compile: {}", trap(e)))?;
        for import in WebAssembly::Module::imports(&module).iter() {
            let field = |k: &str| {
                Reflect::get(&import, &JsValue::from_str(k))
                    .ok()
                    .and_then(|v| v.as_string())
                    .unwrap_or_default()
            };
            let (from, name, kind) = (field("module"), field("name"), field("kind"));
            let allowed = from == RESOURCE_MODULE
                && (name == RESOURCE_NEW || name == RESOURCE_DROP)
                && kind == "function";
            if !allowed {
                return Err(format!(
                    "it imports {kind} {from}/{name}: a trainer imports nothing"
                ));
            }
        }
        let exported: Vec<String> = WebAssembly::Module::exports(&module)
            .iter()
            .filter_map(|e| {
                Reflect::get(&e, &JsValue::from_str("name"))
                    .ok()?
                    .as_string()
            })
            .collect();
        let needed = [
            "memory".to_string(),
            "cabi_realloc".to_string(),
            export("architectures"),
            export("create"),
            export("[dtor]model"),
        ]
        .into_iter()
        .chain(
            [
                "describe",
                "get-params",
                "set-params",
                "get-optimizer-state",
                "set-optimizer-state",
                "get-optimizer",
                "set-optimizer",
                "train-batch",
            ]
            .map(method),
        );
        for name in needed {
            if !exported.contains(&name) {
                return Err(format!(
                    "it does not export {name}: not a {INTERFACE} trainer"
                ));
            }
        }
        Ok(Self { module })
    }

    /// Architectures it can build (from an instance of its own).
    pub fn architectures(&self) -> Result<Vec<String>> {
        let instance = Instance::new(&self.module)?;
        let ret = instance.call(&export("architectures"), &[])?;
        let (ptr, len) = (instance.u32_at(ret)?, instance.u32_at(ret + 4)?);
        let mut names = Vec::new();
        for i in 0..len.min(1024) {
            names.push(instance.string_at(ptr + 8 * i)?);
        }
        instance.post(&export("architectures"), ret);
        Ok(names)
    }
}

fn export(name: &str) -> String {
    format!("{INTERFACE}#{name}")
}

fn method(name: &str) -> String {
    export(&format!("[method]model.{name}"))
}

/// The resource intrinsics an instance imports (kept alive with it).
type Intrinsics = (Closure<dyn FnMut(u32) -> u32>, Closure<dyn FnMut(u32)>);

/// One instance of the core module.
struct Instance {
    exports: Object,
    memory: WebAssembly::Memory,
    /// Resource handles (index + 1) to the guest's representation.
    handles: Rc<RefCell<Vec<Option<u32>>>>,
    _intrinsics: Intrinsics,
}

impl Instance {
    fn new(module: &WebAssembly::Module) -> Result<Self> {
        let handles: Rc<RefCell<Vec<Option<u32>>>> = Rc::default();
        let table = handles.clone();
        let new = Closure::<dyn FnMut(u32) -> u32>::new(move |rep: u32| {
            let mut t = table.borrow_mut();
            t.push(Some(rep));
            t.len() as u32
        });
        let table = handles.clone();
        let drop = Closure::<dyn FnMut(u32)>::new(move |handle: u32| {
            if let Some(slot) = table
                .borrow_mut()
                .get_mut((handle as usize).wrapping_sub(1))
            {
                *slot = None;
            }
        });
        let intrinsics = Object::new();
        let set = |o: &Object, k: &str, v: &JsValue| Reflect::set(o, &JsValue::from_str(k), v);
        set(&intrinsics, RESOURCE_NEW, new.as_ref()).map_err(trap)?;
        set(&intrinsics, RESOURCE_DROP, drop.as_ref()).map_err(trap)?;
        let imports = Object::new();
        set(&imports, RESOURCE_MODULE, &intrinsics).map_err(trap)?;
        let instance = WebAssembly::Instance::new(module, &imports).map_err(trap)?;
        let exports = instance.exports();
        let memory = Reflect::get(&exports, &JsValue::from_str("memory"))
            .map_err(trap)?
            .dyn_into::<WebAssembly::Memory>()
            .map_err(|_| CallError::Trap("its memory export is not a memory".into()))?;
        Ok(Self {
            exports,
            memory,
            handles,
            _intrinsics: (new, drop),
        })
    }

    fn function(&self, name: &str) -> Result<Function> {
        Reflect::get(&self.exports, &JsValue::from_str(name))
            .map_err(trap)?
            .dyn_into::<Function>()
            .map_err(|_| CallError::Trap(format!("{name} is not a function")))
    }

    /// Calls export `name`; its i32 result (a return pointer), if any.
    fn call(&self, name: &str, args: &[JsValue]) -> Result<u32> {
        let args: Array = args.iter().collect();
        let value = self
            .function(name)?
            .apply(&JsValue::NULL, &args)
            .map_err(trap)?;
        Ok(value.as_f64().map_or(0, |v| v as i64 as u32))
    }

    /// Frees what call `name` returned at `ret` (if the export has a post-return).
    fn post(&self, name: &str, ret: u32) {
        if let Ok(f) = self.function(&format!("cabi_post_{name}")) {
            let _ = f.call1(&JsValue::NULL, &JsValue::from(ret));
        }
    }

    fn buffer(&self) -> JsValue {
        self.memory.buffer()
    }

    /// `len` bytes at `ptr`, checked against the memory.
    fn bytes_at(&self, ptr: u32, len: u32) -> Result<Vec<u8>> {
        let buffer = self.buffer();
        let size = buffer
            .dyn_ref::<js_sys::ArrayBuffer>()
            .map_or(0, |b| b.byte_length());
        if len > MAX_READ || u64::from(ptr) + u64::from(len) > u64::from(size) {
            return Err(CallError::Trap(format!(
                "it pointed at bytes {ptr}..{} of a {size}-byte memory",
                u64::from(ptr) + u64::from(len)
            )));
        }
        Ok(Uint8Array::new_with_byte_offset_and_length(&buffer, ptr, len).to_vec())
    }

    fn u32_at(&self, ptr: u32) -> Result<u32> {
        let b = self.bytes_at(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32_at(&self, ptr: u32) -> Result<f32> {
        self.u32_at(ptr).map(f32::from_bits)
    }

    /// A `string` (pointer, length) stored at `at`.
    fn string_at(&self, at: u32) -> Result<String> {
        let (ptr, len) = (self.u32_at(at)?, self.u32_at(at + 4)?);
        String::from_utf8(self.bytes_at(ptr, len)?)
            .map_err(|_| CallError::Trap("it returned a string that is not UTF-8".into()))
    }

    /// A `list<u32>` stored at `at`.
    fn u32s_at(&self, at: u32) -> Result<Vec<u32>> {
        let (ptr, len) = (self.u32_at(at)?, self.u32_at(at + 4)?);
        let bytes = self.bytes_at(ptr, len.checked_mul(4).ok_or_else(|| trap("length"))?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A `list<f32>` stored at `at`.
    fn f32s_at(&self, at: u32) -> Result<Vec<f32>> {
        Ok(self.u32s_at(at)?.into_iter().map(f32::from_bits).collect())
    }

    /// A copy of `bytes` in the instance's memory (its allocator's), for
    /// the callee to own: `(pointer, length in elements)` as arguments.
    fn lower(&self, bytes: &[u8], align: u32, elements: usize) -> Result<[JsValue; 2]> {
        let ptr = self.call(
            "cabi_realloc",
            &[
                0.into(),
                0.into(),
                align.into(),
                (bytes.len() as u32).into(),
            ],
        )?;
        // Checks the range too.
        self.bytes_at(ptr, bytes.len() as u32)?;
        Uint8Array::new_with_byte_offset_and_length(&self.buffer(), ptr, bytes.len() as u32)
            .copy_from(bytes);
        Ok([ptr.into(), (elements as u32).into()])
    }

    fn lower_f32s(&self, values: &[f32]) -> Result<[JsValue; 2]> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.lower(&bytes, 4, values.len())
    }

    /// A `result<_, string>` at `ret`, freed.
    fn unit_result(&self, name: &str, ret: u32) -> Result<()> {
        let outcome = match self.bytes_at(ret, 1)?[0] {
            0 => Ok(()),
            1 => Err(CallError::Failed(self.string_at(ret + 4)?)),
            d => Err(CallError::Trap(format!("a result's case is {d}"))),
        };
        self.post(name, ret);
        outcome
    }
}

/// A model built by a component, in an instance of its own.
pub struct ComponentModel {
    instance: Instance,
    /// The guest's representation of the model (what methods take).
    rep: u32,
    /// Set by a trap: every later call fails.
    poisoned: Option<String>,
}

impl ComponentModel {
    /// Builds `config`'s model in a new instance of `component`.
    pub fn new(component: &CompiledComponent, config: &ModelConfig) -> Result<Self> {
        let instance = Instance::new(&component.module)?;
        let [ptr, len] = instance.lower(config.arch.as_bytes(), 1, config.arch.len())?;
        let o = &config.optimizer;
        let name = export("create");
        let ret = instance.call(
            &name,
            &[
                ptr,
                len,
                js_sys::BigInt::from(config.seed).into(),
                o.learning_rate.into(),
                o.momentum.into(),
                o.weight_decay.into(),
            ],
        )?;
        let outcome = match instance.bytes_at(ret, 1)?[0] {
            0 => {
                let handle = instance.u32_at(ret + 4)?;
                let rep = instance
                    .handles
                    .borrow()
                    .get((handle as usize).wrapping_sub(1))
                    .copied()
                    .flatten();
                rep.ok_or_else(|| {
                    CallError::Trap(format!("it returned handle {handle}, which it never made"))
                })
            }
            1 => Err(CallError::Failed(instance.string_at(ret + 4)?)),
            d => Err(CallError::Trap(format!("a result's case is {d}"))),
        };
        instance.post(&name, ret);
        Ok(Self {
            rep: outcome?,
            instance,
            poisoned: None,
        })
    }

    /// Whether a trap made the instance unusable.
    pub fn poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Runs `f` unless a trap poisoned the instance; a trap poisons it.
    fn guarded<T>(&mut self, f: impl FnOnce(&Instance, JsValue) -> Result<T>) -> Result<T> {
        if let Some(why) = &self.poisoned {
            return Err(CallError::Trap(format!(
                "the instance trapped before: {why}"
            )));
        }
        let outcome = f(&self.instance, self.rep.into());
        if let Err(CallError::Trap(why)) = &outcome {
            self.poisoned = Some(why.clone());
        }
        outcome
    }

    /// The architecture (`describe`).
    pub fn describe(&mut self) -> Result<ArchInfo> {
        self.guarded(|i, rep| {
            let name = method("describe");
            let ret = i.call(&name, &[rep])?;
            let usize_at = |p: u32| i.u32_at(p).map(|v| v as usize);
            let shape_at = |p: u32| -> Result<Vec<usize>> {
                Ok(i.u32s_at(p)?.into_iter().map(|v| v as usize).collect())
            };
            let (layers_ptr, layers_len) = (i.u32_at(ret + 16)?, i.u32_at(ret + 20)?);
            let mut layers = Vec::new();
            for l in 0..layers_len.min(4096) {
                let at = layers_ptr + 28 * l;
                layers.push(LayerInfo {
                    name: i.string_at(at)?,
                    kind: i.string_at(at + 8)?,
                    output_shape: shape_at(at + 16)?,
                    param_count: usize_at(at + 24)?,
                });
            }
            let (tensors_ptr, tensors_len) = (i.u32_at(ret + 24)?, i.u32_at(ret + 28)?);
            let mut tensors = Vec::new();
            for t in 0..tensors_len.min(4096) {
                let at = tensors_ptr + 24 * t;
                tensors.push(TensorInfo {
                    name: i.string_at(at)?,
                    shape: shape_at(at + 8)?,
                    offset: usize_at(at + 16)?,
                    len: usize_at(at + 20)?,
                });
            }
            let info = ArchInfo {
                name: i.string_at(ret)?,
                input_shape: shape_at(ret + 8)?,
                layers,
                tensors,
                param_count: usize_at(ret + 32)?,
                optimizer_state_len: usize_at(ret + 36)?,
            };
            i.post(&name, ret);
            Ok(info)
        })
    }

    fn get_list(&mut self, what: &str) -> Result<Vec<f32>> {
        self.guarded(|i, rep| {
            let name = method(what);
            let ret = i.call(&name, &[rep])?;
            let values = i.f32s_at(ret)?;
            i.post(&name, ret);
            Ok(values)
        })
    }

    fn set_list(&mut self, what: &str, values: &[f32]) -> Result<()> {
        self.guarded(|i, rep| {
            let name = method(what);
            let [ptr, len] = i.lower_f32s(values)?;
            let ret = i.call(&name, &[rep, ptr, len])?;
            i.unit_result(&name, ret)
        })
    }

    /// The flat parameter vector.
    pub fn params(&mut self) -> Result<Vec<f32>> {
        self.get_list("get-params")
    }

    /// Replaces the parameters.
    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.set_list("set-params", params)
    }

    /// The optimizer state (momentum).
    pub fn optimizer_state(&mut self) -> Result<Vec<f32>> {
        self.get_list("get-optimizer-state")
    }

    /// Replaces the optimizer state.
    pub fn set_optimizer_state(&mut self, state: &[f32]) -> Result<()> {
        self.set_list("set-optimizer-state", state)
    }

    /// The optimizer's hyper-parameters.
    pub fn optimizer(&mut self) -> Result<OptimizerConfig> {
        self.guarded(|i, rep| {
            let ret = i.call(&method("get-optimizer"), &[rep])?;
            Ok(OptimizerConfig {
                learning_rate: i.f32_at(ret)?,
                momentum: i.f32_at(ret + 4)?,
                weight_decay: i.f32_at(ret + 8)?,
            })
        })
    }

    /// Changes the optimizer's hyper-parameters.
    pub fn set_optimizer(&mut self, o: OptimizerConfig) -> Result<()> {
        self.guarded(|i, rep| {
            let name = method("set-optimizer");
            let args = [
                rep,
                o.learning_rate.into(),
                o.momentum.into(),
                o.weight_decay.into(),
            ];
            let ret = i.call(&name, &args)?;
            i.unit_result(&name, ret)
        })
    }

    /// One SGD step on a batch.
    pub fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<TrainStats> {
        self.guarded(|i, rep| {
            let name = method("train-batch");
            let [pp, pl] = i.lower(pixels, 1, pixels.len())?;
            let [lp, ll] = i.lower(labels, 1, labels.len())?;
            let ret = i.call(&name, &[rep, pp, pl, lp, ll])?;
            let outcome = match i.bytes_at(ret, 1)?[0] {
                0 => Ok(TrainStats {
                    loss: i.f32_at(ret + 4)?,
                    correct: i.u32_at(ret + 8)?,
                    count: i.u32_at(ret + 12)?,
                }),
                1 => Err(CallError::Failed(i.string_at(ret + 4)?)),
                d => Err(CallError::Trap(format!("a result's case is {d}"))),
            };
            i.post(&name, ret);
            outcome
        })
    }
}

impl Drop for ComponentModel {
    fn drop(&mut self) {
        if self.poisoned.is_none() {
            let _ = self
                .instance
                .call(&export("[dtor]model"), &[self.rep.into()]);
        }
    }
}
