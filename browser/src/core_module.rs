//! The core WebAssembly module inside a training component, taken out so a
//! browser's own WebAssembly engine can run it, with its memory capped.
//!
//! A component is a sequence of sections; the ones with id 1 are whole core
//! modules. A trainer built by `wit-component` holds the module with the
//! training code plus small glue modules (the resource destructor's
//! trampoline) that the browser does not need: [`CoreModule::extract`]
//! returns the module that exports the trainer interface. What it may import
//! is checked later, by name, against the engine's list (see `component.rs`).
//!
//! Nothing here trusts the bytes: every length is checked, and anything this
//! reader does not know is an error naming it.

/// Magic and layer/version of a component binary.
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// Magic and version of a core module binary.
const MODULE_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
/// Section id of a core module inside a component.
const CORE_MODULE_SECTION: u8 = 1;
/// Section ids inside a core module.
const EXPORT_SECTION: u8 = 7;
const MEMORY_SECTION: u8 = 5;
/// WebAssembly pages are 64 KiB.
pub const PAGE_BYTES: u64 = 65_536;

/// A core module's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreModule(pub Vec<u8>);

impl CoreModule {
    /// The core module of `component` that exports `marker` (a function
    /// name only the trainer's own module exports).
    pub fn extract(component: &[u8], marker: &str) -> Result<Self, String> {
        let body = component
            .strip_prefix(&COMPONENT_PREAMBLE)
            .ok_or("it is not a WebAssembly component (wrong preamble)")?;
        let mut found = None;
        for section in sections(body)? {
            let (id, contents) = section?;
            if id != CORE_MODULE_SECTION {
                continue;
            }
            let exports = export_names(contents)?;
            if exports.iter().any(|e| e == marker) {
                if found.is_some() {
                    return Err(format!("it holds two core modules that export {marker}"));
                }
                found = Some(contents.to_vec());
            }
        }
        found
            .map(CoreModule)
            .ok_or_else(|| format!("none of its core modules exports {marker}"))
    }

    /// The same module with every memory's maximum at most `cap_bytes`
    /// (rounded down to whole pages), so the browser's engine refuses to
    /// grow it further: an allocation past the cap fails inside the
    /// component (which traps) instead of taking the tab's memory. A
    /// memory whose initial size is already past the cap is an error.
    pub fn with_memory_cap(&self, cap_bytes: u64) -> Result<Self, String> {
        let cap_pages = cap_bytes / PAGE_BYTES;
        let body = self
            .0
            .strip_prefix(&MODULE_PREAMBLE)
            .ok_or("it is not a core WebAssembly module (wrong preamble)")?;
        let mut out = MODULE_PREAMBLE.to_vec();
        for section in sections(body)? {
            let (id, contents) = section?;
            let contents = if id == MEMORY_SECTION {
                capped_memories(contents, cap_pages)?
            } else {
                contents.to_vec()
            };
            out.push(id);
            write_leb(&mut out, contents.len() as u64);
            out.extend_from_slice(&contents);
        }
        Ok(CoreModule(out))
    }
}

/// The sections of a module or component body: `(id, contents)`.
fn sections(mut body: &[u8]) -> Result<impl Iterator<Item = Result<(u8, &[u8]), String>>, String> {
    let mut all = Vec::new();
    while let Some((&id, rest)) = body.split_first() {
        let mut reader = Reader(rest);
        let len = reader.leb()? as usize;
        let contents = reader.take(len)?;
        all.push(Ok((id, contents)));
        body = reader.0;
    }
    Ok(all.into_iter())
}

/// The names a core module exports.
fn export_names(module: &[u8]) -> Result<Vec<String>, String> {
    let body = module
        .strip_prefix(&MODULE_PREAMBLE)
        .ok_or("a core module section does not hold a core module")?;
    for section in sections(body)? {
        let (id, contents) = section?;
        if id != EXPORT_SECTION {
            continue;
        }
        let mut r = Reader(contents);
        let count = r.leb()?;
        let mut names = Vec::new();
        for _ in 0..count {
            names.push(r.name()?);
            r.take(1)?; // kind
            r.leb()?; // index
        }
        return Ok(names);
    }
    Ok(Vec::new())
}

/// A memory section's contents with every maximum capped at `cap_pages`.
fn capped_memories(contents: &[u8], cap_pages: u64) -> Result<Vec<u8>, String> {
    let mut r = Reader(contents);
    let count = r.leb()?;
    let mut out = Vec::new();
    write_leb(&mut out, count);
    for i in 0..count {
        let flags = r.take(1)?[0];
        if flags > 1 {
            // 2, 3: shared; 4 and up: 64-bit or custom page sizes.
            return Err(format!(
                "memory {i} is of a kind a training component has no use for (flags {flags:#x})"
            ));
        }
        let min = r.leb()?;
        let max = if flags == 1 { r.leb()? } else { u64::MAX };
        if min > cap_pages {
            return Err(format!(
                "memory {i} starts at {} MiB, past the cap of {} MiB",
                (min * PAGE_BYTES) >> 20,
                (cap_pages * PAGE_BYTES) >> 20
            ));
        }
        out.push(1);
        write_leb(&mut out, min);
        write_leb(&mut out, max.min(cap_pages));
    }
    if !r.0.is_empty() {
        return Err("the memory section has bytes after its last memory".into());
    }
    Ok(out)
}

/// Reads a section's contents, never past their end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.0.len() {
            return Err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// An unsigned LEB128 number of at most 64 bits.
    fn leb(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number is longer than 64 bits".into())
    }

    /// A length-prefixed UTF-8 name.
    fn name(&mut self) -> Result<String, String> {
        let len = self.leb()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a name is not UTF-8".to_string())
    }
}

fn write_leb(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module with one memory (`limits`) and one exported function name.
    fn module(limits: &[u8], export: &str) -> Vec<u8> {
        let mut m = MODULE_PREAMBLE.to_vec();
        let mut memory = vec![1];
        memory.extend_from_slice(limits);
        m.push(MEMORY_SECTION);
        write_leb(&mut m, memory.len() as u64);
        m.extend_from_slice(&memory);
        let mut exports = vec![1, export.len() as u8];
        exports.extend_from_slice(export.as_bytes());
        exports.extend_from_slice(&[0, 0]);
        m.push(EXPORT_SECTION);
        write_leb(&mut m, exports.len() as u64);
        m.extend_from_slice(&exports);
        m
    }

    fn component(modules: &[Vec<u8>]) -> Vec<u8> {
        let mut c = COMPONENT_PREAMBLE.to_vec();
        for m in modules {
            c.push(CORE_MODULE_SECTION);
            write_leb(&mut c, m.len() as u64);
            c.extend_from_slice(m);
        }
        c
    }

    #[test]
    fn the_module_that_exports_the_marker_is_taken_out() {
        let glue = module(&[0, 1], "0");
        let trainer = module(&[0, 17], "train");
        let c = component(&[glue, trainer.clone()]);
        assert_eq!(CoreModule::extract(&c, "train").unwrap().0, trainer);
        let missing = CoreModule::extract(&c, "predict").unwrap_err();
        assert!(missing.contains("none of its core modules"), "{missing}");
        let twice = component(&[trainer.clone(), trainer.clone()]);
        assert!(CoreModule::extract(&twice, "train").is_err());
        assert!(
            CoreModule::extract(&trainer, "train").is_err(),
            "a module is not a component"
        );
    }

    #[test]
    fn a_cut_or_lying_length_is_an_error_not_a_panic() {
        let c = component(&[module(&[0, 17], "train")]);
        for end in 0..c.len() {
            let _ = CoreModule::extract(&c[..end], "train");
        }
        let mut lying = c.clone();
        lying[9] = 0xff; // the section's length
        assert!(CoreModule::extract(&lying, "train").is_err());
    }

    #[test]
    fn memories_get_a_maximum_at_the_cap() {
        let cap = 4 * PAGE_BYTES;
        // No maximum: one is added.
        let m = CoreModule(module(&[0, 2], "f"))
            .with_memory_cap(cap)
            .unwrap();
        assert_eq!(m.0, module(&[1, 2, 4], "f"));
        // A higher maximum comes down; a lower one stays.
        let m = CoreModule(module(&[1, 2, 200, 1], "f"))
            .with_memory_cap(cap)
            .unwrap();
        assert_eq!(m.0, module(&[1, 2, 4], "f"));
        let m = CoreModule(module(&[1, 2, 3], "f"))
            .with_memory_cap(cap)
            .unwrap();
        assert_eq!(m.0, module(&[1, 2, 3], "f"));
        // Starting past the cap, shared or 64-bit memories are refused.
        assert!(
            CoreModule(module(&[0, 5], "f"))
                .with_memory_cap(cap)
                .is_err()
        );
        assert!(
            CoreModule(module(&[3, 1, 2], "f"))
                .with_memory_cap(cap)
                .is_err()
        );
        assert!(
            CoreModule(module(&[4, 1], "f"))
                .with_memory_cap(cap)
                .is_err()
        );
    }

    #[test]
    fn the_built_in_trainer_comes_out_whole() {
        let marker = format!("{}#create", crate::component::INTERFACE);
        let core = CoreModule::extract(hearth_runtime::BUILTIN_COMPONENT, &marker).unwrap();
        assert!(core.0.len() > 100_000, "{} bytes", core.0.len());
        let capped = core.with_memory_cap(256 << 20).unwrap();
        // Only the memory section changed: the rest is byte for byte the same.
        assert!(capped.0.len() >= core.0.len() && capped.0.len() <= core.0.len() + 8);
        assert_eq!(
            export_names(&capped.0).unwrap(),
            export_names(&core.0).unwrap()
        );
    }
}
