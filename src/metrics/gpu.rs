//! NVIDIA GPU metrics through NVML, read at scrape time. Without a driver or a GPU the collector
//! logs one line at start and reports only `torchwatch_gpu_available 0`.
//!
//! The collector reads a [`GpuSource`], so tests drive it with a fake instead of NVML.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// One GPU's readings; a reading the device does not support is `None` and is left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    /// NVML device index.
    pub index: u32,
    /// Device UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Memory in use by every process, bytes.
    pub memory_used_bytes: Option<u64>,
    /// Installed memory, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Fraction of the last sample period a kernel ran, 0 to 1.
    pub utilization_ratio: Option<f64>,
    /// Die temperature, degrees Celsius.
    pub temperature_celsius: Option<f64>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// Memory used by this process on the device, bytes.
    pub process_memory_bytes: Option<u64>,
}

/// Where GPU readings come from.
pub trait GpuSource: Send + Sync + std::fmt::Debug + 'static {
    /// Reads every device now.
    fn sample(&self) -> Vec<GpuSample>;
}

/// The real source: NVML, loaded once for the process.
pub struct NvmlSource {
    nvml: Nvml,
    pid: u32,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource").finish_non_exhaustive()
    }
}

impl NvmlSource {
    /// Loads `libnvidia-ml.so.1`; fails cleanly without a driver.
    pub fn open() -> Result<NvmlSource, String> {
        let nvml = Nvml::init().map_err(|e| e.to_string())?;
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        if count == 0 {
            return Err("NVML reports no GPU".to_owned());
        }
        Ok(NvmlSource {
            nvml,
            pid: std::process::id(),
        })
    }
}

impl GpuSource for NvmlSource {
    fn sample(&self) -> Vec<GpuSample> {
        let count = self.nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|index| {
                let device = self.nvml.device_by_index(index).ok()?;
                let memory = device.memory_info().ok();
                let process_memory = device.running_compute_processes().ok().and_then(|ps| {
                    ps.into_iter().find(|p| p.pid == self.pid).and_then(|p| {
                        match p.used_gpu_memory {
                            UsedGpuMemory::Used(bytes) => Some(bytes),
                            UsedGpuMemory::Unavailable => None,
                        }
                    })
                });
                Some(GpuSample {
                    index,
                    uuid: device.uuid().unwrap_or_default(),
                    name: device.name().unwrap_or_default(),
                    memory_used_bytes: memory.as_ref().map(|m| m.used),
                    memory_total_bytes: memory.as_ref().map(|m| m.total),
                    utilization_ratio: device
                        .utilization_rates()
                        .ok()
                        .map(|u| f64::from(u.gpu) / 100.0),
                    temperature_celsius: device
                        .temperature(TemperatureSensor::Gpu)
                        .ok()
                        .map(f64::from),
                    power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                    process_memory_bytes: process_memory,
                })
            })
            .collect()
    }
}

/// Encodes `torchwatch_gpu_*` from a source, or only `torchwatch_gpu_available 0` without one.
#[derive(Debug)]
pub struct GpuCollector {
    source: Option<Box<dyn GpuSource>>,
}

impl GpuCollector {
    /// Uses NVML when it loads; otherwise logs why, once, and reports no GPU.
    pub fn detect() -> GpuCollector {
        match NvmlSource::open() {
            Ok(source) => GpuCollector::with_source(Box::new(source)),
            Err(reason) => {
                tracing::info!(event = "gpu_metrics_unavailable", reason = %reason,
                    "no NVIDIA GPU metrics: NVML is not usable here; torchwatch_gpu_available is 0");
                GpuCollector { source: None }
            }
        }
    }

    /// Reads from `source` (NVML, or a fake in tests).
    pub fn with_source(source: Box<dyn GpuSource>) -> GpuCollector {
        GpuCollector {
            source: Some(source),
        }
    }
}

type Reading = fn(&GpuSample) -> Option<f64>;

/// Per-device families: name, help, reading.
const FAMILIES: [(&str, &str, Reading); 6] = [
    (
        "torchwatch_gpu_memory_used_bytes",
        "GPU memory in use by every process",
        |s| s.memory_used_bytes.map(|v| v as f64),
    ),
    (
        "torchwatch_gpu_memory_total_bytes",
        "GPU memory installed",
        |s| s.memory_total_bytes.map(|v| v as f64),
    ),
    (
        "torchwatch_gpu_utilization_ratio",
        "Fraction of the last sample period a kernel ran on the GPU",
        |s| s.utilization_ratio,
    ),
    (
        "torchwatch_gpu_temperature_celsius",
        "GPU die temperature",
        |s| s.temperature_celsius,
    ),
    ("torchwatch_gpu_power_watts", "GPU power draw", |s| {
        s.power_watts
    }),
    (
        "torchwatch_gpu_process_memory_bytes",
        "GPU memory used by this torchwatch process",
        |s| s.process_memory_bytes.map(|v| v as f64),
    ),
];

fn device_gauge(
    encoder: &mut MetricEncoder<'_>,
    sample: &GpuSample,
    value: f64,
) -> std::fmt::Result {
    let index = sample.index.to_string();
    let labels = [
        ("gpu", index.as_str()),
        ("uuid", sample.uuid.as_str()),
        ("name", sample.name.as_str()),
    ];
    ConstGauge::new(value).encode(encoder.encode_family(&labels)?)
}

impl Collector for GpuCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let samples = self.source.as_ref().map(|s| s.sample()).unwrap_or_default();
        let available = ConstGauge::new(i64::from(!samples.is_empty()));
        available.encode(encoder.encode_descriptor(
            "torchwatch_gpu_available",
            "1 when NVML reports at least one NVIDIA GPU",
            None,
            MetricType::Gauge,
        )?)?;
        for (name, help, read) in FAMILIES {
            let readings: Vec<(&GpuSample, f64)> =
                samples.iter().filter_map(|s| Some((s, read(s)?))).collect();
            if readings.is_empty() {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (sample, value) in readings {
                device_gauge(&mut family, sample, value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct FakeGpus(Vec<GpuSample>);

    impl GpuSource for FakeGpus {
        fn sample(&self) -> Vec<GpuSample> {
            self.0.clone()
        }
    }

    fn encode(collector: GpuCollector) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn reports_each_device_with_its_labels() {
        let h100 = GpuSample {
            index: 0,
            uuid: "GPU-aaaa".into(),
            name: "NVIDIA H100".into(),
            memory_used_bytes: Some(2 << 30),
            memory_total_bytes: Some(80 << 30),
            utilization_ratio: Some(0.42),
            temperature_celsius: Some(51.0),
            power_watts: Some(312.5),
            process_memory_bytes: Some(1 << 30),
        };
        // A second device that cannot report power or per-process memory.
        let older = GpuSample {
            index: 1,
            uuid: "GPU-bbbb".into(),
            name: "Tesla T4".into(),
            power_watts: None,
            process_memory_bytes: None,
            ..h100.clone()
        };
        let text = encode(GpuCollector::with_source(Box::new(FakeGpus(vec![
            h100, older,
        ]))));
        assert!(text.contains("torchwatch_gpu_available 1\n"), "{text}");
        assert!(text.contains(
            "torchwatch_gpu_utilization_ratio{gpu=\"0\",uuid=\"GPU-aaaa\",name=\"NVIDIA H100\"} 0.42\n"
        ));
        assert!(text.contains(
            "torchwatch_gpu_memory_total_bytes{gpu=\"1\",uuid=\"GPU-bbbb\",name=\"Tesla T4\"} 85899345920.0\n"
        ));
        assert!(text.contains(
            "torchwatch_gpu_power_watts{gpu=\"0\",uuid=\"GPU-aaaa\",name=\"NVIDIA H100\"} 312.5\n"
        ));
        assert!(!text.contains("torchwatch_gpu_power_watts{gpu=\"1\""));
        assert_eq!(
            text.matches("torchwatch_gpu_process_memory_bytes{").count(),
            1
        );
    }

    #[test]
    fn without_a_source_only_availability_is_reported() {
        let text = encode(GpuCollector { source: None });
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples, ["torchwatch_gpu_available 0"]);
    }
}
