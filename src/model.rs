//! LibTorch through tch: loading a TorchScript module on a device and running forward passes on
//! host tensors. Every call that input can reach uses tch's fallible `f_*` API, so a malformed
//! request becomes an error message rather than a panic.

use std::path::Path;

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::config::DeviceSpec;
use crate::tensor::{DataType, HostTensor};

/// A model could not be loaded or could not run an input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file is missing, unreadable or not TorchScript.
    #[error("cannot load TorchScript model {path}: {reason}")]
    Load {
        /// The model file.
        path: String,
        /// LibTorch's first line of explanation.
        reason: String,
    },
    /// The configured device does not exist here.
    #[error("{0}")]
    Device(String),
    /// LibTorch rejected the input (wrong rank, feature size, dtype...).
    #[error("{0}")]
    Forward(String),
}

/// A loaded TorchScript module bound to a device.
pub struct Model {
    module: CModule,
    device: Device,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// The CUDA build of LibTorch only registers its backend when `libtorch.so` is linked (the `cuda`
/// feature); report which one this binary is for `torchwatch profile` and logs.
pub fn cuda_available() -> bool {
    tch::Cuda::is_available()
}

/// Resolves a configured device to a LibTorch device that exists on this host.
pub fn resolve_device(spec: DeviceSpec) -> Result<Device, ModelError> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => Ok(Device::cuda_if_available()),
        DeviceSpec::Cuda(index) => {
            let count = if cuda_available() {
                tch::Cuda::device_count()
            } else {
                0
            };
            if (index as i64) < count {
                Ok(Device::Cuda(index))
            } else if count == 0 {
                Err(ModelError::Device(format!(
                    "cuda:{index} requested but no CUDA device is usable (no GPU, no driver, or a \
                     binary built without the `cuda` feature); use device: cpu or auto"
                )))
            } else {
                Err(ModelError::Device(format!(
                    "cuda:{index} requested but only {count} CUDA device(s) exist"
                )))
            }
        }
    }
}

/// Human name of a device, as in configs.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_owned(),
    }
}

/// Sets LibTorch's intra-op thread count for forward passes started from the calling thread.
pub fn set_threads(threads: usize) {
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
}

/// [`set_threads`] unless the calling thread already has that count, for a thread that runs
/// passes of models with different counts.
pub fn use_threads(threads: usize) {
    if usize::try_from(tch::get_num_threads()).ok() != Some(threads) {
        set_threads(threads);
    }
}

impl Model {
    /// Loads a TorchScript file onto `device`, in evaluation mode.
    pub fn load(path: &Path, device: Device) -> Result<Model, ModelError> {
        let load_error = |reason: String| ModelError::Load {
            path: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(load_error("no such file".to_owned()));
        }
        let mut module = CModule::load_on_device(path, device)
            .map_err(|e| load_error(first_line(&e.to_string())))?;
        module
            .f_set_eval()
            .map_err(|e| load_error(first_line(&e.to_string())))?;
        Ok(Model { module, device })
    }

    /// The device the module lives on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs one forward pass on host tensors and returns the outputs in host memory.
    pub fn forward(&self, inputs: &[HostTensor]) -> Result<Vec<HostTensor>, ModelError> {
        self.forward_joined(&[inputs])
    }

    /// Runs one forward pass over the rows of several requests (each its inputs in the model's
    /// order), joined along dimension 0 as each input tensor is built: every request's bytes
    /// are copied once, straight into LibTorch's memory, and the outputs hold all the rows.
    pub fn forward_joined(
        &self,
        requests: &[&[HostTensor]],
    ) -> Result<Vec<HostTensor>, ModelError> {
        let inputs = requests.first().map_or(0, |r| r.len());
        let tensors = (0..inputs)
            .map(|i| {
                let parts = requests
                    .iter()
                    .map(|r| r.get(i))
                    .collect::<Option<Vec<&HostTensor>>>()
                    .ok_or_else(|| {
                        ModelError::Forward(
                            "requests joined into one pass differ in their number of inputs"
                                .to_owned(),
                        )
                    })?;
                joined(&parts)?
                    .f_to_device(self.device)
                    .map_err(forward_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.forward_tensors(&tensors)?
            .iter()
            .map(to_host)
            .collect()
    }

    /// Runs one forward pass on LibTorch tensors already on the model's device.
    pub fn forward_tensors(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let _no_grad = tch::no_grad_guard();
        let args: Vec<IValue> = inputs
            .iter()
            .map(|t| IValue::Tensor(t.shallow_clone()))
            .collect();
        let output = self.module.forward_is(&args).map_err(forward_error)?;
        flatten_output(output)
    }

    /// Waits for queued GPU work, so wall-clock timings include it.
    pub fn synchronize(&self) {
        if let Device::Cuda(index) = self.device {
            tch::Cuda::synchronize(index as i64);
        }
    }
}

/// One CPU tensor of `parts` stacked along dimension 0, their bytes copied in once.
fn joined(parts: &[&HostTensor]) -> Result<Tensor, ModelError> {
    let Some(first) = parts.first() else {
        return Err(ModelError::Forward(
            "a forward pass needs at least one request".to_owned(),
        ));
    };
    if parts.len() == 1 {
        return Tensor::f_from_data_size(&first.data, &first.shape, kind(first.datatype))
            .map_err(forward_error);
    }
    if !parts.iter().all(|p| first.stacks_with(p)) {
        return Err(ModelError::Forward(
            "requests joined into one pass differ in datatype or in a dimension past the first"
                .to_owned(),
        ));
    }
    let mut shape = first.shape.clone();
    shape[0] = parts.iter().map(|p| p.shape[0]).sum();
    let bytes: usize = parts.iter().map(|p| p.data.len()).sum();
    let tensor =
        Tensor::f_empty(&shape, (kind(first.datatype), Device::Cpu)).map_err(forward_error)?;
    if tensor.numel() * first.datatype.size() != bytes {
        return Err(ModelError::Forward(format!(
            "requests joined into one pass hold {bytes} bytes, not the {} of shape {shape:?}",
            tensor.numel() * first.datatype.size()
        )));
    }
    if bytes > 0 {
        // SAFETY: `tensor` was just allocated by LibTorch as a contiguous CPU tensor of exactly
        // `bytes` bytes (checked above), and nothing else refers to it until it is returned.
        let memory =
            unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr().cast::<u8>(), bytes) };
        let mut at = 0;
        for part in parts {
            memory[at..at + part.data.len()].copy_from_slice(&part.data);
            at += part.data.len();
        }
    }
    Ok(tensor)
}

fn flatten_output(output: IValue) -> Result<Vec<Tensor>, ModelError> {
    match output {
        IValue::Tensor(t) => Ok(vec![t]),
        IValue::TensorList(ts) => Ok(ts),
        IValue::Tuple(items) | IValue::GenericList(items) => items
            .into_iter()
            .map(|item| match item {
                IValue::Tensor(t) => Ok(t),
                _ => Err(ModelError::Forward(
                    "the model returned a tuple holding something other than tensors".to_owned(),
                )),
            })
            .collect(),
        _ => Err(ModelError::Forward(
            "the model returned neither a tensor nor a tuple of tensors".to_owned(),
        )),
    }
}

fn to_host(tensor: &Tensor) -> Result<HostTensor, ModelError> {
    let datatype = datatype_of(tensor.f_kind().map_err(forward_error)?)?;
    let host = tensor
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .map_err(forward_error)?;
    let numel = host.numel();
    let mut bytes = vec![0u8; numel * datatype.size()];
    host.f_copy_data_u8(&mut bytes, numel)
        .map_err(forward_error)?;
    HostTensor::new(datatype, host.size(), bytes.into()).map_err(ModelError::Forward)
}

/// LibTorch's element kind for a protocol datatype.
pub fn kind(datatype: DataType) -> Kind {
    match datatype {
        DataType::Bool => Kind::Bool,
        DataType::Uint8 => Kind::Uint8,
        DataType::Int8 => Kind::Int8,
        DataType::Int16 => Kind::Int16,
        DataType::Int32 => Kind::Int,
        DataType::Int64 => Kind::Int64,
        DataType::Fp32 => Kind::Float,
        DataType::Fp64 => Kind::Double,
    }
}

fn datatype_of(kind: Kind) -> Result<DataType, ModelError> {
    DataType::ALL
        .into_iter()
        .find(|&d| self::kind(d) == kind)
        .ok_or_else(|| {
            ModelError::Forward(format!(
                "the model returned a {kind:?} tensor, which the protocol cannot carry here"
            ))
        })
}

fn forward_error(error: tch::TchError) -> ModelError {
    ModelError::Forward(first_line(&error.to_string()))
}

/// The sentence a client needs from a LibTorch error. Plain errors put it first, followed by a
/// C++ backtrace; errors raised inside TorchScript start with a TorchScript traceback and put it
/// on a `RuntimeError: ...` line, or a `builtins.ValueError: ...` one where the model's own code
/// raised.
fn first_line(message: &str) -> String {
    let message = message
        .strip_prefix("Internal torch error: ")
        .unwrap_or(message);
    let raised = message.lines().find_map(|line| {
        let (kind, text) = line.split_once(": ")?;
        let is_exception = (kind.ends_with("Error") || kind.ends_with("Exception"))
            && kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        is_exception.then_some(text)
    });
    raised
        .or_else(|| message.lines().next())
        .unwrap_or(message)
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::{first_line, joined, to_host};
    use crate::tensor::{DataType, HostTensor, fp32_rows as rows};

    #[test]
    fn requests_are_joined_row_after_row() {
        let (a, b, c) = (
            rows(&[1.0, 2.0], 2),
            rows(&[3.0, 4.0, 5.0, 6.0], 2),
            rows(&[], 2),
        );
        let tensor = joined(&[&a, &b, &c]).unwrap();
        assert_eq!(
            to_host(&tensor).unwrap(),
            rows(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2)
        );
        assert_eq!(to_host(&joined(&[&b]).unwrap()).unwrap(), b);
    }

    #[test]
    fn requests_of_other_widths_or_types_are_not_joined() {
        let narrow = rows(&[1.0, 2.0], 1);
        let wide = rows(&[1.0, 2.0], 2);
        let error = joined(&[&narrow, &wide]).unwrap_err().to_string();
        assert!(
            error.contains("differ in datatype or in a dimension"),
            "{error}"
        );
        let int = HostTensor::new(DataType::Int32, vec![1, 2], vec![0; 8].into()).unwrap();
        assert!(joined(&[&wide, &int]).is_err());
        assert!(joined(&[]).is_err());
    }

    #[test]
    fn torchscript_errors_give_the_raised_message() {
        let message = "The following operation failed in the TorchScript interpreter.\n\
            Traceback of TorchScript, serialized code (most recent call last):\n  \
            File \"code/__torch__.py\", line 12, in forward\n\
            RuntimeError: mat1 and mat2 shapes cannot be multiplied (1x64 and 4096x10)\n";
        assert_eq!(
            first_line(message),
            "mat1 and mat2 shapes cannot be multiplied (1x64 and 4096x10)"
        );
        // A `raise ValueError(...)` in the model's forward (models/picky.pt).
        let raised = "The following operation failed in the TorchScript interpreter.\n\
            Traceback of TorchScript (most recent call last):\n  \
            File \"code/__torch__.py\", line 10, in forward\n    \
            ops.prim.RaiseException(_0, \"builtins.ValueError\")\n\
            builtins.ValueError: negative input: picky takes values >= 0\n";
        assert_eq!(
            first_line(raised),
            "negative input: picky takes values >= 0"
        );
        let plain =
            "Internal torch error: expected scalar type Float\nException raised from x at y.cpp:1";
        assert_eq!(first_line(plain), "expected scalar type Float");
    }
}
