//! Two MPI ranks on this machine (loopback, shared memory): the collectives'
//! values, and a lost rank ending the job in bounded time.
//!
//! Each test starts itself again under `mpirun -n 2`; the copies see
//! `COLLECTIVE_TEST_RANK_BODY` and run the rank's side instead.
#![cfg(feature = "mpi")]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use collective::{init, Collective, Options};
use tch::Tensor;

const BODY: &str = "COLLECTIVE_TEST_RANK_BODY";

/// Runs `test` on two ranks; `None` when this process is itself a rank.
fn on_two_ranks(test: &str) -> Option<(Output, Duration)> {
    if std::env::var_os(BODY).is_some() {
        return None;
    }
    let start = Instant::now();
    let output = Command::new("mpirun")
        .args(["-n", "2", "--oversubscribe", "--bind-to", "none"])
        .args([
            "--mca",
            "btl",
            "self,vader",
            "--mca",
            "btl_vader_single_copy_mechanism",
            "none",
        ])
        .args(["-x", BODY])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(BODY, "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("running mpirun (Debian: openmpi-bin; scripts/setup.sh installs it)");
    Some((output, start.elapsed()))
}

fn text(output: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn engine(timeout_s: u64) -> Box<dyn Collective> {
    init(&Options {
        timeout: Duration::from_secs(timeout_s),
        ..Options::default()
    })
    .unwrap()
}

#[test]
fn two_ranks_reduce_broadcast_and_gather() {
    let Some((output, _)) = on_two_ranks("two_ranks_reduce_broadcast_and_gather") else {
        let c = engine(60);
        assert!(
            c.world_size() == 2 && c.engine().contains("MPI"),
            "{}",
            c.engine()
        );
        let r = c.rank() as f64;
        let mut sums = vec![
            Tensor::from_slice(&[(r + 1.0) as f32, (10.0 * (r + 1.0)) as f32]).view([1, 2]),
            Tensor::from_slice(&[0.5 * r + 0.25]),
        ];
        c.all_reduce_sum(&mut sums).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(sums[0].view([-1])).unwrap(),
            vec![3.0, 30.0]
        );
        assert_eq!(Vec::<f64>::try_from(&sums[1]).unwrap(), vec![1.0]);
        let mut means = vec![Tensor::from_slice(&[4.0f32 * r as f32])];
        c.all_reduce_mean(&mut means).unwrap();
        assert_eq!(Vec::<f32>::try_from(&means[0]).unwrap(), vec![2.0]);
        let mut from_one = vec![
            Tensor::from_slice(&[c.rank() as i64, 7]),
            Tensor::from_slice(&[r as f32 + 0.125]),
        ];
        c.broadcast(&mut from_one, 1).unwrap();
        assert_eq!(Vec::<i64>::try_from(&from_one[0]).unwrap(), vec![1, 7]);
        assert_eq!(Vec::<f32>::try_from(&from_one[1]).unwrap(), vec![1.125]);
        assert_eq!(
            c.all_gather_u64(100 + c.rank() as u64).unwrap(),
            vec![100, 101]
        );
        c.barrier().unwrap();
        println!("rank {} checked", c.rank());
        return;
    };
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains("rank 0 checked") && all.contains("rank 1 checked"),
        "{all}"
    );
}

#[test]
fn a_killed_rank_ends_the_job_naming_it() {
    let Some((output, elapsed)) = on_two_ranks("a_killed_rank_ends_the_job_naming_it") else {
        let c = engine(120);
        c.barrier().unwrap();
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_millis(500));
            // SAFETY: the test's point: this rank dies at once, as under `kill -9`.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        let mut t = vec![Tensor::ones([4], (tch::Kind::Float, tch::Device::Cpu))];
        c.all_reduce_sum(&mut t).unwrap();
        println!("rank {} was not stopped", c.rank());
        return;
    };
    let all = text(&output);
    assert!(
        !output.status.success() && !all.contains("was not stopped"),
        "{all}"
    );
    assert!(
        all.contains("rank 1"),
        "the launcher names the lost rank: {all}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}: {all}");
}

#[test]
fn a_stalled_rank_trips_the_others_watchdog() {
    let Some((output, elapsed)) = on_two_ranks("a_stalled_rank_trips_the_others_watchdog") else {
        let c = engine(3);
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_secs(120));
        }
        let mut t = vec![Tensor::ones([4], (tch::Kind::Float, tch::Device::Cpu))];
        c.all_reduce_sum(&mut t).unwrap();
        println!("rank {} was not stopped", c.rank());
        return;
    };
    let all = text(&output);
    assert!(
        !output.status.success() && !all.contains("was not stopped"),
        "{all}"
    );
    assert!(
        all.contains("rank 0 of 2: all_reduce_sum did not finish within 3 s"),
        "{all}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}: {all}");
}

#[test]
fn ranks_wait_for_an_evaluation_longer_than_a_collective_but_not_for_ever() {
    let test = "ranks_wait_for_an_evaluation_longer_than_a_collective_but_not_for_ever";
    let Some((output, elapsed)) = on_two_ranks(test) else {
        let c = init(&Options {
            timeout: Duration::from_secs(1),
            evaluation_timeout: Duration::from_secs(6),
        })
        .unwrap();
        // Rank 0 "evaluates" for 3 s, longer than a collective's 1 s: the
        // other rank waits in the evaluation barrier.
        if c.rank() == 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        c.evaluation_barrier().unwrap();
        println!("rank {} waited out the evaluation", c.rank());
        // An evaluation that outlasts its deadline stops the waiting rank.
        if c.rank() == 0 {
            std::thread::sleep(Duration::from_secs(120));
        }
        c.evaluation_barrier().unwrap();
        println!("rank {} was not stopped", c.rank());
        return;
    };
    let all = text(&output);
    assert!(all.contains("rank 1 waited out the evaluation"), "{all}");
    assert!(
        !output.status.success() && !all.contains("was not stopped"),
        "{all}"
    );
    assert!(
        all.contains("rank 1 of 2: waiting for rank 0's evaluation did not finish within 6 s"),
        "{all}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}: {all}");
}

#[test]
fn a_panicking_rank_ends_the_job() {
    let Some((output, elapsed)) = on_two_ranks("a_panicking_rank_ends_the_job") else {
        let c = engine(120);
        let mut t = vec![Tensor::ones([4], (tch::Kind::Float, tch::Device::Cpu))];
        if c.rank() == 1 {
            panic!("rank one fails on purpose");
        }
        c.all_reduce_sum(&mut t).unwrap();
        println!("rank {} was not stopped", c.rank());
        return;
    };
    let all = text(&output);
    assert!(
        !output.status.success() && !all.contains("was not stopped"),
        "{all}"
    );
    assert!(
        all.contains("rank one fails on purpose") && all.contains("rank 1 of 2 panicked"),
        "{all}"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}: {all}");
}
