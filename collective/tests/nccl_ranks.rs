//! NCCL from PyTorch's wheel: opened and used for unique ids on any machine
//! (no GPU needed), and an all-reduce of CUDA tensors on two GPU ranks where
//! a machine has two GPUs (skipped, saying so, elsewhere).
#![cfg(feature = "nccl")]

use std::process::Command;
use std::time::Duration;

use collective::nccl::NcclLibrary;
use collective::{init, Options};
use tch::{Device, Kind, Tensor};

const BODY: &str = "COLLECTIVE_TEST_RANK_BODY";

#[test]
fn nccl_opens_and_makes_unique_ids() {
    let nccl = NcclLibrary::open().unwrap();
    let version = nccl.version().unwrap();
    assert!(
        version >= 21_000,
        "NCCL {version} from {}",
        nccl.path().display()
    );
    let (a, b) = (nccl.unique_id().unwrap(), nccl.unique_id().unwrap());
    assert!(a.internal.iter().any(|&c| c != 0));
    assert!(a.internal != b.internal, "two ids must differ");
}

#[test]
fn two_gpu_ranks_all_reduce_and_broadcast() {
    if std::env::var_os(BODY).is_none() {
        if tch::Cuda::device_count() < 2 {
            eprintln!(
                "skipped: needs a machine with 2 or more GPUs (this one has {})",
                tch::Cuda::device_count()
            );
            return;
        }
        let out = Command::new("mpirun")
            .args([
                "-n",
                "2",
                "--oversubscribe",
                "--bind-to",
                "none",
                "-x",
                BODY,
            ])
            .arg(std::env::current_exe().unwrap())
            .args([
                "two_gpu_ranks_all_reduce_and_broadcast",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(BODY, "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success()
                && all.contains("rank 0 checked")
                && all.contains("rank 1 checked"),
            "{all}"
        );
        return;
    }
    let c = init(&Options {
        timeout: Duration::from_secs(120),
        ..Options::default()
    })
    .unwrap();
    let device = Device::Cuda(c.local_rank() % tch::Cuda::device_count() as usize);
    let r = c.rank() as f32;
    let mut t = vec![
        Tensor::from_slice(&[r + 1.0, 10.0 * (r + 1.0)]).to_device(device),
        Tensor::from_slice(&[r as f64]).to_device(device),
        // A non-contiguous view is reduced through a contiguous copy.
        Tensor::from_slice(&[r, r, r, r])
            .view([2, 2])
            .to_device(device)
            .transpose(0, 1),
        Tensor::from_slice(&[r + 5.0]),
    ];
    c.all_reduce_sum(&mut t).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(t[0].to_device(Device::Cpu)).unwrap(),
        vec![3.0, 30.0]
    );
    assert_eq!(
        Vec::<f64>::try_from(t[1].to_device(Device::Cpu)).unwrap(),
        vec![1.0]
    );
    assert_eq!(
        t[2].to_device(Device::Cpu)
            .sum(Kind::Float)
            .double_value(&[]),
        4.0
    );
    assert_eq!(Vec::<f32>::try_from(&t[3]).unwrap(), vec![11.0]);
    let mut b = vec![Tensor::from_slice(&[c.rank() as i64 + 7]).to_device(device)];
    c.broadcast(&mut b, 1).unwrap();
    assert_eq!(
        Vec::<i64>::try_from(b[0].to_device(Device::Cpu)).unwrap(),
        vec![8]
    );
    println!("rank {} checked", c.rank());
}
