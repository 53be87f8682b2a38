//! Running out of memory as an error, not a crash.
//!
//! libtorch reports a failed allocation (CUDA's "out of memory", the CPU
//! allocator's "can't allocate memory") as an exception that `tch` turns
//! into a panic inside the operation that needed the memory, deep inside a
//! network's forward or backward pass. [`guard`] runs one unit of work (a
//! training batch, a sampling chunk, a fine-tuning round) and turns such a
//! failure into [`RunError::OutOfMemory`], which names the setting to lower.
//! Nothing is written in the middle of a unit, so the checkpoints already on
//! disk stay as they were; the tensors of the failed unit are freed as the
//! panic unwinds.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::error::RunError;

thread_local! {
    /// Whether this thread is inside [`guard`] (its allocation failures are
    /// reported as errors, so the panic hook keeps quiet about them).
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

static QUIET_HOOK: Once = Once::new();

/// Whether a libtorch message says that an allocation failed.
pub fn is_out_of_memory(message: &str) -> bool {
    message.contains("out of memory") || message.contains("can't allocate memory")
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// libtorch's own words from where it names the failed allocation, without
/// `tch`'s `Result::unwrap` wrapping or libtorch's source location.
fn detail(message: &str) -> String {
    let start = ["CUDA out of memory", "DefaultCPUAllocator", "out of memory"]
        .iter()
        .find_map(|p| message.find(p))
        .unwrap_or(0);
    let text = &message[start..];
    // The first line, whether its end is a newline or an escaped one.
    let end = ["\\n", "\n", "\""]
        .iter()
        .filter_map(|stop| text.find(stop))
        .min()
        .unwrap_or(text.len());
    text[..end].trim().to_string()
}

/// Runs `work` (one `what`, e.g. "a pretraining batch"), turning an
/// allocation failure inside libtorch, as a panic or as an error, into
/// [`RunError::OutOfMemory`] that says to lower `setting` (now `value`).
/// Other panics go on unwinding.
pub fn guard<T>(
    what: &str,
    setting: &'static str,
    value: usize,
    work: impl FnOnce() -> Result<T, RunError>,
) -> Result<T, RunError> {
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let expected =
                GUARDED.with(Cell::get) && panic_text(info.payload()).is_some_and(is_out_of_memory);
            if !expected {
                previous(info);
            }
        }));
    });
    let outer = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(work));
    GUARDED.with(|g| g.set(outer));
    let out_of_memory = |message: &str| RunError::OutOfMemory {
        what: what.to_string(),
        setting,
        value,
        detail: detail(message),
    };
    match result {
        Ok(Err(RunError::Torch(e))) if is_out_of_memory(&e.to_string()) => {
            Err(out_of_memory(&e.to_string()))
        }
        Ok(other) => other,
        Err(payload) => match panic_text(payload.as_ref()) {
            Some(message) if is_out_of_memory(message) => Err(out_of_memory(message)),
            _ => panic::resume_unwind(payload),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    /// 2^48 bytes: more than any machine has and than a 47-bit address space
    /// can map, so the allocation fails whatever the overcommit policy.
    const TOO_MANY_FLOATS: i64 = 1 << 46;

    #[test]
    fn a_failed_allocation_names_the_setting_to_lower() {
        let err = guard("a sampling chunk", "eval.chunk", 1_000_000, || {
            Ok(Tensor::zeros(
                [TOO_MANY_FLOATS],
                (Kind::Float, tch::Device::Cpu),
            ))
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("out of memory in a sampling chunk: lower eval.chunk (now 1000000)"),
            "{text}"
        );
        assert!(text.contains("can't allocate memory"), "{text}");
        assert!(!text.contains("unwrap"), "{text}");
        // The fallible form of the same call is caught too.
        let err = guard("a batch", "task.batch", 7, || {
            Ok(Tensor::f_zeros(
                [TOO_MANY_FLOATS],
                (Kind::Float, tch::Device::Cpu),
            )?)
        })
        .unwrap_err();
        assert!(
            matches!(err, RunError::OutOfMemory { value: 7, .. }),
            "{err}"
        );
        // Work that fits runs as usual.
        let fine = guard("a batch", "task.batch", 7, || {
            Ok(Tensor::ones([3], tch::kind::FLOAT_CPU))
        });
        assert_eq!(fine.unwrap().sum(Kind::Float).double_value(&[]), 3.0);
    }

    #[test]
    fn other_panics_are_not_swallowed() {
        let caught = panic::catch_unwind(|| {
            let _ = guard("a batch", "task.batch", 1, || -> Result<(), RunError> {
                panic!("a bug, not memory")
            });
        });
        assert!(caught.is_err());
    }

    #[test]
    fn libtorch_messages_lose_the_unwrap_wrapping() {
        let message = "called `Result::unwrap()` on an `Err` value: Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB\\nException raised from malloc\")";
        assert_eq!(
            detail(message),
            "CUDA out of memory. Tried to allocate 2.00 GiB"
        );
    }
}
