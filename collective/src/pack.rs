//! Many tensors as one flat buffer, so that a step's gradients cross the
//! network in one call, and back.

use tch::{Device, Kind, Tensor};

use crate::CollectiveError;

/// Floating-point tensors packed by precision: `f32` and `f16`/`bf16`
/// tensors into one `f32` buffer, `f64` tensors into one `f64` buffer
/// (each summed in its own precision or better).
#[derive(Debug, Default)]
pub struct Packed {
    /// The single-or-lower-precision values, tensor after tensor.
    pub single: Vec<f32>,
    /// The double-precision values, tensor after tensor.
    pub double: Vec<f64>,
}

fn is_double(kind: Kind) -> bool {
    kind == Kind::Double
}

fn torch(operation: &'static str) -> impl Fn(tch::TchError) -> CollectiveError {
    move |source| CollectiveError::Torch { operation, source }
}

/// Packs `tensors` (any device, any shape) for an all-reduce.
pub fn pack_floats(operation: &'static str, tensors: &[Tensor]) -> Result<Packed, CollectiveError> {
    let mut packed = Packed::default();
    for (index, tensor) in tensors.iter().enumerate() {
        let kind = tensor.kind();
        if !matches!(
            kind,
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        ) {
            return Err(CollectiveError::Kind {
                operation,
                index,
                kind,
            });
        }
        let flat = tensor.detach().to_device(Device::Cpu).reshape([-1]);
        if is_double(kind) {
            packed
                .double
                .extend(Vec::<f64>::try_from(&flat).map_err(torch(operation))?);
        } else {
            packed.single.extend(
                Vec::<f32>::try_from(&flat.to_kind(Kind::Float)).map_err(torch(operation))?,
            );
        }
    }
    Ok(packed)
}

/// Writes `packed`'s values back into `tensors` in place (the order and
/// sizes of [`pack_floats`]), each on its own device and in its own kind,
/// scaled by `scale`.
pub fn unpack_floats(
    operation: &'static str,
    packed: &Packed,
    tensors: &mut [Tensor],
    scale: f64,
) -> Result<(), CollectiveError> {
    let _guard = tch::no_grad_guard();
    let (mut single, mut double) = (0usize, 0usize);
    for tensor in tensors.iter_mut() {
        let numel = tensor.numel();
        let values = if is_double(tensor.kind()) {
            let piece = Tensor::from_slice(&packed.double[double..double + numel]);
            double += numel;
            piece
        } else {
            let piece = Tensor::from_slice(&packed.single[single..single + numel]);
            single += numel;
            piece
        };
        let values = if scale == 1.0 { values } else { values * scale };
        let values = values.view(tensor.size().as_slice());
        tensor.f_copy_(&values).map_err(torch(operation))?;
    }
    Ok(())
}

/// The bytes of `tensors` (any kind, any device), tensor after tensor, for a
/// broadcast that must copy them exactly.
pub fn pack_bytes(operation: &'static str, tensors: &[Tensor]) -> Result<Vec<u8>, CollectiveError> {
    let mut bytes = Vec::new();
    for tensor in tensors {
        let flat = tensor.detach().to_device(Device::Cpu).contiguous();
        let count = flat.numel() * flat.kind().elt_size_in_bytes();
        let start = bytes.len();
        bytes.resize(start + count, 0);
        flat.f_copy_data_u8(&mut bytes[start..], flat.numel())
            .map_err(torch(operation))?;
    }
    Ok(bytes)
}

/// Writes bytes of [`pack_bytes`] back into `tensors` in place.
pub fn unpack_bytes(
    operation: &'static str,
    bytes: &[u8],
    tensors: &mut [Tensor],
) -> Result<(), CollectiveError> {
    let _guard = tch::no_grad_guard();
    let mut at = 0usize;
    for tensor in tensors.iter_mut() {
        let count = tensor.numel() * tensor.kind().elt_size_in_bytes();
        let size = tensor.size();
        let values = Tensor::f_from_data_size(&bytes[at..at + count], &size, tensor.kind())
            .map_err(torch(operation))?;
        at += count;
        tensor.f_copy_(&values).map_err(torch(operation))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_bytes_go_back_where_they_came_from() {
        let mut tensors = vec![
            Tensor::from_slice(&[1.5f32, -2.0, 3.0, 4.0]).view([2, 2]),
            Tensor::from_slice(&[0.1f64, 0.2, 0.3]),
            Tensor::from_slice(&[7.0f32]),
        ];
        let originals: Vec<Tensor> = tensors.iter().map(|t| t.copy()).collect();
        let packed = pack_floats("test", &tensors).unwrap();
        assert_eq!(packed.single, vec![1.5, -2.0, 3.0, 4.0, 7.0]);
        assert_eq!(packed.double, vec![0.1, 0.2, 0.3]);
        for t in &mut tensors {
            let _ = t.zero_();
        }
        unpack_floats("test", &packed, &mut tensors, 0.5).unwrap();
        for (t, o) in tensors.iter().zip(&originals) {
            assert!(t.equal(&(o * 0.5)), "{t} {o}");
            assert_eq!(t.kind(), o.kind());
        }
        let mut mixed = vec![
            Tensor::from_slice(&[3i64, -9]),
            Tensor::from_slice(&[0.25f32, 1e-30]),
        ];
        let bytes = pack_bytes("test", &mixed).unwrap();
        assert_eq!(bytes.len(), 2 * 8 + 2 * 4);
        let kept: Vec<Tensor> = mixed.iter().map(|t| t.copy()).collect();
        for t in &mut mixed {
            let _ = t.zero_();
        }
        unpack_bytes("test", &bytes, &mut mixed).unwrap();
        assert!(mixed[0].equal(&kept[0]) && mixed[1].equal(&kept[1]));
    }

    #[test]
    fn integer_tensors_are_refused_by_name() {
        let tensors = [Tensor::from_slice(&[1.0f32]), Tensor::from_slice(&[1i64])];
        let err = pack_floats("all_reduce_sum", &tensors)
            .unwrap_err()
            .to_string();
        assert!(err.contains("all_reduce_sum: tensor 1 is Int64"), "{err}");
    }
}
