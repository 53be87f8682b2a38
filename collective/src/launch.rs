//! Rank, world size and local rank as the launcher announces them
//! (`mpirun` of OpenMPI or MPICH, Slurm's `srun`).

use crate::CollectiveError;

/// Who started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: a single process.
    None,
    /// OpenMPI's `mpirun` (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// MPICH's Hydra `mpiexec` (`PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID`).
    Hydra,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`).
    Slurm,
}

impl Launcher {
    /// The launcher's name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::None => "no launcher",
            Launcher::OpenMpi => "mpirun (OpenMPI)",
            Launcher::Hydra => "mpiexec (MPICH Hydra)",
            Launcher::Slurm => "srun (Slurm)",
        }
    }
}

/// This process's place in the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// The launcher that set the environment.
    pub launcher: Launcher,
    /// This process's rank, 0-based.
    pub rank: usize,
    /// The number of ranks.
    pub world: usize,
    /// The rank among the ranks on this node (the GPU it takes).
    pub local_rank: usize,
}

impl Launch {
    /// A single process: rank 0 of 1.
    pub const SINGLE: Launch = Launch {
        launcher: Launcher::None,
        rank: 0,
        world: 1,
        local_rank: 0,
    };

    /// Reads the launcher's variables from this process's environment.
    pub fn from_env() -> Result<Launch, CollectiveError> {
        Launch::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the launcher's variables through `get` (OpenMPI first, then
    /// MPICH's Hydra, then Slurm: `mpirun` inside a Slurm allocation sets
    /// both, and its own variables describe the MPI job).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Launch, CollectiveError> {
        let schemes: [(Launcher, &'static str, &'static str, &'static str); 3] = [
            (
                Launcher::OpenMpi,
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_LOCAL_RANK",
            ),
            (Launcher::Hydra, "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
            // SLURM_STEP_NUM_TASKS is the step's size; SLURM_NTASKS can be the job's.
            (
                Launcher::Slurm,
                "SLURM_PROCID",
                "SLURM_STEP_NUM_TASKS",
                "SLURM_LOCALID",
            ),
        ];
        for (launcher, rank_var, world_var, local_var) in schemes {
            let (Some(rank), Some(world)) = (get(rank_var), get(world_var)) else {
                continue;
            };
            let world = parse(world_var, &world, "a number of ranks, 1 or more")?;
            if world == 0 {
                return Err(CollectiveError::Environment {
                    variable: world_var,
                    value: "0".into(),
                    expected: "a number of ranks, 1 or more".into(),
                });
            }
            let rank_text = rank;
            let rank = parse(rank_var, &rank_text, "a rank")?;
            if rank >= world {
                return Err(CollectiveError::Environment {
                    variable: rank_var,
                    value: rank_text,
                    expected: format!("a rank below {world_var}={world}"),
                });
            }
            let local_rank = match get(local_var) {
                Some(text) => parse(local_var, &text, "a node-local rank")?,
                None => 0,
            };
            return Ok(Launch {
                launcher,
                rank,
                world,
                local_rank,
            });
        }
        Ok(Launch::SINGLE)
    }
}

fn parse(variable: &'static str, text: &str, expected: &str) -> Result<usize, CollectiveError> {
    text.trim()
        .parse()
        .map_err(|_| CollectiveError::Environment {
            variable,
            value: text.to_string(),
            expected: expected.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch, CollectiveError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn each_launcher_is_read_from_its_own_variables() {
        assert_eq!(launch(&[]).unwrap(), Launch::SINGLE);
        let open = launch(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            // mpirun inside a Slurm allocation: OpenMPI's variables win.
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "1"),
        ])
        .unwrap();
        assert_eq!(
            open,
            Launch {
                launcher: Launcher::OpenMpi,
                rank: 3,
                world: 8,
                local_rank: 1
            }
        );
        let slurm = launch(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_STEP_NUM_TASKS", "16"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NTASKS", "32"),
        ])
        .unwrap();
        assert_eq!(
            (slurm.launcher, slurm.rank, slurm.world, slurm.local_rank),
            (Launcher::Slurm, 5, 16, 1)
        );
        let hydra = launch(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")]).unwrap();
        assert_eq!(
            (hydra.launcher, hydra.rank, hydra.world, hydra.local_rank),
            (Launcher::Hydra, 1, 2, 0)
        );
    }

    #[test]
    fn bad_launcher_variables_are_named() {
        let err = launch(&[("OMPI_COMM_WORLD_RANK", "2"), ("OMPI_COMM_WORLD_SIZE", "2")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("OMPI_COMM_WORLD_RANK=\"2\"")
                && err.contains("below OMPI_COMM_WORLD_SIZE=2"),
            "{err}"
        );
        let err = launch(&[("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "four")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("SLURM_STEP_NUM_TASKS=\"four\"") && err.contains("a number of ranks"),
            "{err}"
        );
    }
}
