//! Volumes in the engine: create, inspect and remove them, and reach their files through a
//! helper container. The helper's image is made here from nothing (no registry): an empty
//! `/volume` folder owned by `nobody` and a program of about 150 bytes (x86-64 or AArch64)
//! that unlinks one path. Reads and writes go through the engine's archive API on a helper
//! that is created and never started; only deleting a file starts one (the archive API cannot
//! delete).

use std::collections::HashMap;
use std::path::Path;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions,
    UploadToContainerOptions,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::{Engine, EngineError};
use crate::domain::volume::HELPER_MOUNT;

/// The helper image milkcrate makes itself; the tag changes when its contents do.
pub const HELPER_IMAGE: &str = "milkcrate/volume-helper:2";

/// Exit status of the unlink program: 0, or the errno of `unlink(2)`.
pub type Errno = i64;

/// A static Linux program for the engine's architecture (`amd64` or `arm64`, as Docker names
/// them) that does `exit(-unlink(argv[1]))`; `None` for others. Written out byte by byte because
/// nothing may be pulled and the helper must not depend on a shell or a libc.
///
/// x86-64:
/// ```text
/// mov rdi, [rsp+16] ; argv[1]
/// mov eax, 87       ; unlink
/// syscall
/// mov edi, eax
/// neg edi           ; 0 or errno
/// mov eax, 60       ; exit
/// syscall
/// ```
/// AArch64 (which has only `unlinkat`):
/// ```text
/// ldr  x1, [sp, #16] ; argv[1]
/// movn x0, #99       ; AT_FDCWD (-100)
/// movz x2, #0        ; flags
/// movz x8, #35       ; unlinkat
/// svc  #0
/// neg  x0, x0        ; 0 or errno
/// movz x8, #93       ; exit
/// svc  #0
/// ```
pub fn unlink_program(arch: &str) -> Option<Vec<u8>> {
    let (machine, align, code): (u16, u64, Vec<u8>) = match arch {
        "amd64" => (
            0x3e,
            0x1000,
            vec![
                0x48, 0x8b, 0x7c, 0x24, 0x10, // mov rdi, [rsp+16]
                0xb8, 0x57, 0x00, 0x00, 0x00, // mov eax, 87
                0x0f, 0x05, // syscall
                0x89, 0xc7, // mov edi, eax
                0xf7, 0xdf, // neg edi
                0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60
                0x0f, 0x05, // syscall
            ],
        ),
        "arm64" => (
            0xb7,
            // Some arm64 kernels use 64 KiB pages.
            0x10000,
            [
                0xF940_0BE1u32, // ldr x1, [sp, #16]
                0x9280_0C60,    // movn x0, #99
                0xD280_0002,    // movz x2, #0
                0xD280_0468,    // movz x8, #35
                0xD400_0001,    // svc #0
                0xCB00_03E0,    // neg x0, x0
                0xD280_0BA8,    // movz x8, #93
                0xD400_0001,    // svc #0
            ]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect(),
        ),
        _ => return None,
    };
    Some(elf(machine, align, &code))
}

/// A static Linux program for the engine's architecture that renames its arguments in pairs,
/// `rename(argv[1], argv[2])`, `rename(argv[3], argv[4])`…, stopping at the first failure:
/// exit status 0, or that rename's errno. It puts a volume upload in place once the engine
/// has unpacked all of it under temporary names. `None` for other architectures.
///
/// x86-64 (68 bytes of code):
/// ```text
///     mov rbx, [rsp]      ; argc
///     lea r12, [rsp+16]   ; &argv[1]
///     dec rbx
/// 1:  cmp rbx, 2
///     jb 3f
///     mov rdi, [r12]
///     mov rsi, [r12+8]
///     mov eax, 82         ; rename
///     syscall
///     test eax, eax
///     jnz 2f
///     add r12, 16
///     sub rbx, 2
///     jmp 1b
/// 2:  neg eax             ; errno
///     mov edi, eax
///     mov eax, 60         ; exit
///     syscall
/// 3:  xor edi, edi
///     mov eax, 60
///     syscall
/// ```
/// AArch64 (which has only `renameat2`):
/// ```text
///     ldr  x19, [sp]       ; argc
///     add  x20, sp, #16    ; &argv[1]
///     sub  x19, x19, #1
/// 1:  cmp  x19, #2
///     b.lo 3f
///     movn x0, #99         ; AT_FDCWD
///     ldr  x1, [x20]
///     movn x2, #99
///     ldr  x3, [x20, #8]
///     movz x4, #0          ; flags
///     movz x8, #276        ; renameat2
///     svc  #0
///     cbnz x0, 2f
///     add  x20, x20, #16
///     sub  x19, x19, #2
///     b    1b
/// 2:  neg  x0, x0
///     movz x8, #93         ; exit
///     svc  #0
/// 3:  movz x0, #0
///     movz x8, #93
///     svc  #0
/// ```
/// (Assembled with llvm-mc and checked by disassembly.)
pub fn rename_program(arch: &str) -> Option<Vec<u8>> {
    let (machine, align, code): (u16, u64, Vec<u8>) = match arch {
        "amd64" => (
            0x3e,
            0x1000,
            vec![
                0x48, 0x8b, 0x1c, 0x24, // mov rbx, [rsp]
                0x4c, 0x8d, 0x64, 0x24, 0x10, // lea r12, [rsp+16]
                0x48, 0xff, 0xcb, // dec rbx
                0x48, 0x83, 0xfb, 0x02, // 1: cmp rbx, 2
                0x72, 0x29, // jb 3f
                0x49, 0x8b, 0x3c, 0x24, // mov rdi, [r12]
                0x49, 0x8b, 0x74, 0x24, 0x08, // mov rsi, [r12+8]
                0xb8, 0x52, 0x00, 0x00, 0x00, // mov eax, 82
                0x0f, 0x05, // syscall
                0x85, 0xc0, // test eax, eax
                0x75, 0x0a, // jnz 2f
                0x49, 0x83, 0xc4, 0x10, // add r12, 16
                0x48, 0x83, 0xeb, 0x02, // sub rbx, 2
                0xeb, 0xdc, // jmp 1b
                0xf7, 0xd8, // 2: neg eax
                0x89, 0xc7, // mov edi, eax
                0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60
                0x0f, 0x05, // syscall
                0x31, 0xff, // 3: xor edi, edi
                0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60
                0x0f, 0x05, // syscall
            ],
        ),
        "arm64" => (
            0xb7,
            0x10000,
            [
                0xF940_03F3u32, // ldr x19, [sp]
                0x9100_43F4,    // add x20, sp, #16
                0xD100_0673,    // sub x19, x19, #1
                0xF100_0A7F,    // 1: cmp x19, #2
                0x5400_01E3,    // b.lo 3f
                0x9280_0C60,    // movn x0, #99
                0xF940_0281,    // ldr x1, [x20]
                0x9280_0C62,    // movn x2, #99
                0xF940_0683,    // ldr x3, [x20, #8]
                0xD280_0004,    // movz x4, #0
                0xD280_2288,    // movz x8, #276
                0xD400_0001,    // svc #0
                0xB500_0080,    // cbnz x0, 2f
                0x9100_4294,    // add x20, x20, #16
                0xD100_0A73,    // sub x19, x19, #2
                0x17FF_FFF4,    // b 1b
                0xCB00_03E0,    // 2: neg x0, x0
                0xD280_0BA8,    // movz x8, #93
                0xD400_0001,    // svc #0
                0xD280_0000,    // 3: movz x0, #0
                0xD280_0BA8,    // movz x8, #93
                0xD400_0001,    // svc #0
            ]
            .iter()
            .flat_map(|i| i.to_le_bytes())
            .collect(),
        ),
        _ => return None,
    };
    Some(elf(machine, align, &code))
}

/// A minimal static ELF executable: the two headers and `code`, loaded at 0x400000.
fn elf(machine: u16, align: u64, code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    let total = (64 + 56 + code.len()) as u64;
    let mut elf = Vec::with_capacity(total as usize);
    // ELF header: 64-bit, little-endian, version 1, System V.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // version
    elf.extend_from_slice(&(BASE + 64 + 56).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // program headers offset
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // header size
    elf.extend_from_slice(&56u16.to_le_bytes()); // program header size
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[0; 6]); // no sections
    // One loadable, readable and executable segment: the whole file.
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R + X
    elf.extend_from_slice(&0u64.to_le_bytes()); // offset
    elf.extend_from_slice(&BASE.to_le_bytes()); // vaddr
    elf.extend_from_slice(&BASE.to_le_bytes()); // paddr
    elf.extend_from_slice(&total.to_le_bytes()); // file size
    elf.extend_from_slice(&total.to_le_bytes()); // memory size
    elf.extend_from_slice(&align.to_le_bytes());
    elf.extend_from_slice(code);
    elf
}

impl Engine {
    /// Creates a volume. One that exists already is an error naming it.
    pub async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: Some("local".into()),
                labels: Some(labels),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    /// The volume's labels, or `None` when it does not exist.
    pub async fn volume_labels(
        &self,
        name: &str,
    ) -> Result<Option<HashMap<String, String>>, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.labels)),
            Err(e) => match EngineError::from(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Names of the volumes carrying all `labels`.
    pub async fn volumes_labelled(&self, labels: &[String]) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        Ok(self
            .docker
            .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: Some(filters),
            }))
            .await?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// Removes a volume; `NotFound` when it is gone, `Api` when a container uses it.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        Ok(self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await?)
    }

    /// Makes the helper image when the engine does not have it (an import, not a pull).
    pub async fn ensure_helper_image(&self) -> Result<(), EngineError> {
        if self.image_exists(HELPER_IMAGE).await {
            return Ok(());
        }
        let (repo, tag) = HELPER_IMAGE
            .split_once(':')
            .unwrap_or((HELPER_IMAGE, "latest"));
        let arch = self.arch().await?;
        // An engine of another architecture gets a helper that can read and write, not delete.
        let unlink = unlink_program(&arch).unwrap_or_default();
        let rename = rename_program(&arch).unwrap_or_default();
        let rootfs =
            crate::archive::volume::helper_rootfs(&[("unlink", &unlink), ("rename", &rename)])
                .map_err(|e| EngineError::Api(e.to_string()))?;
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            changes: vec![
                format!("LABEL {}=true", super::MANAGED_LABEL),
                "CMD [\"/unlink\"]".into(),
            ],
            ..Default::default()
        };
        let mut progress = self.docker.create_image(
            Some(options),
            Some(bollard::body_full(Bytes::from(rootfs))),
            None,
        );
        while let Some(item) = progress.next().await {
            let info = item?;
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Api(err));
            }
        }
        Ok(())
    }

    /// Creates (and does not start) a helper container with `volume` at `/volume`. It has no
    /// network, no capabilities, a read-only root and runs as `nobody`.
    pub async fn create_volume_helper(
        &self,
        volume: &str,
        read_only: bool,
        cmd: Vec<String>,
        labels: HashMap<String, String>,
    ) -> Result<String, EngineError> {
        self.helper_container(volume, read_only, cmd, labels, true)
            .await
    }

    /// Makes `uid:gid` the owner of the volume's top folder (mode 0755), so an app running as
    /// that user can write it. The engine's archive API applies a tar entry's owner: a
    /// helper that is never started gets a one-entry tar (`volume/`) unpacked at its `/`,
    /// which is why this helper's root is not read-only (nothing runs in it).
    pub async fn set_volume_owner(
        &self,
        volume: &str,
        uid: u32,
        gid: u32,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let tar = crate::archive::owner_tar(HELPER_MOUNT.trim_start_matches('/'), uid, gid)
            .map_err(|e| EngineError::Api(e.to_string()))?;
        let id = self
            .helper_container(volume, false, Vec::new(), labels, false)
            .await?;
        let result = self.put_archive_bytes(&id, "/", tar).await;
        let _ = self.remove_container(&id).await;
        result
    }

    async fn helper_container(
        &self,
        volume: &str,
        read_only: bool,
        cmd: Vec<String>,
        labels: HashMap<String, String>,
        readonly_root: bool,
    ) -> Result<String, EngineError> {
        // Named for its install, like everything an install makes.
        let install = labels
            .get(crate::config::INSTANCE_LABEL)
            .map(|i| format!("{}-", crate::config::name_part(i)))
            .unwrap_or_default();
        let owner = crate::domain::volume::FILE_OWNER;
        let body = ContainerCreateBody {
            image: Some(HELPER_IMAGE.into()),
            cmd: (!cmd.is_empty()).then_some(cmd),
            user: Some(format!("{owner}:{owner}")),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec![crate::domain::hardening::NO_NEW_PRIVILEGES.into()]),
                readonly_rootfs: Some(readonly_root),
                memory: Some(32 * 1024 * 1024),
                pids_limit: Some(8),
                mounts: Some(vec![Mount {
                    target: Some(HELPER_MOUNT.into()),
                    source: Some(volume.into()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(read_only),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = || CreateContainerOptions {
            name: Some(format!(
                "milkcrate-{install}volume-helper-{}",
                hex::encode(rand_bytes())
            )),
            ..Default::default()
        };
        // The image is looked at only when the engine says it is missing (the first time), not
        // before every operation.
        match self
            .docker
            .create_container(Some(options()), body.clone())
            .await
            .map_err(EngineError::from)
        {
            Err(EngineError::NotFound(_)) => {
                self.ensure_helper_image().await?;
                Ok(self
                    .docker
                    .create_container(Some(options()), body)
                    .await?
                    .id)
            }
            other => other.map(|r| r.id),
        }
    }

    /// Helper containers carrying all `labels` (`key=value`), each with its id and labels,
    /// so a caller can tell whose they are.
    pub async fn helpers_labelled(
        &self,
        labels: &[String],
    ) -> Result<Vec<(String, HashMap<String, String>)>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.to_vec())]);
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        Ok(self
            .docker
            .list_containers(Some(options))
            .await?
            .into_iter()
            .filter_map(|c| Some((c.id?, c.labels.unwrap_or_default())))
            .collect())
    }

    /// Unpacks the tar in `file` at `path` inside container `id`, streaming it from disk.
    pub async fn put_archive(&self, id: &str, path: &str, file: &Path) -> Result<(), EngineError> {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| EngineError::Api(format!("cannot read the upload: {e}")))?;
        self.put_archive_stream(id, path, tokio_util::io::ReaderStream::new(f))
            .await
    }

    /// Unpacks a small in-memory tar at `path` inside container `id`.
    pub async fn put_archive_bytes(
        &self,
        id: &str,
        path: &str,
        tar: Vec<u8>,
    ) -> Result<(), EngineError> {
        let body = futures_util::stream::once(async move { Ok(Bytes::from(tar)) });
        self.put_archive_stream(id, path, body).await
    }

    /// Unpacks a tar streamed from `body` at `path` inside container `id`.
    pub async fn put_archive_stream(
        &self,
        id: &str,
        path: &str,
        body: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), EngineError> {
        Ok(self
            .docker
            .upload_to_container(
                id,
                Some(upload_options(path)),
                bollard::body_try_stream(body),
            )
            .await?)
    }

    /// The tar of `path` inside container `id`, as the engine streams it.
    pub fn get_archive(
        &self,
        id: &str,
        path: &str,
    ) -> impl Stream<Item = Result<Bytes, EngineError>> + Send + 'static {
        self.docker
            .download_from_container(
                id,
                Some(DownloadFromContainerOptions {
                    path: path.to_string(),
                }),
            )
            .map(|r| r.map_err(EngineError::from))
    }

    /// Starts container `id` and waits for it to exit; returns its exit code.
    pub async fn run_to_exit(&self, id: &str) -> Result<i64, EngineError> {
        self.start(id).await?;
        let mut wait = self
            .docker
            .wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(e.into()),
            None => Err(EngineError::Api("the helper container vanished".into())),
        }
    }

    /// Size and whether `path` inside container `id` is a folder.
    pub async fn stat_path(&self, id: &str, path: &str) -> Result<(u64, bool), EngineError> {
        let stat = self
            .docker
            .get_container_archive_info(
                id,
                Some(bollard::query_parameters::ContainerArchiveInfoOptions {
                    path: path.to_string(),
                }),
            )
            .await?;
        // Go's os.ModeDir.
        Ok((stat.size.max(0) as u64, stat.file_mode & (1 << 31) != 0))
    }

    /// The engine's CPU architecture, as Go names it (`amd64`, `arm64`).
    pub async fn arch(&self) -> Result<String, EngineError> {
        Ok(self.docker.version().await?.arch.unwrap_or_default())
    }
}

fn upload_options(path: &str) -> UploadToContainerOptions {
    UploadToContainerOptions {
        path: path.to_string(),
        // A file may replace a folder and the other way round (that is how deletes work).
        no_overwrite_dir_non_dir: Some("false".into()),
        // Owners come from the tar headers (nobody), not from the container's user.
        copy_uidgid: None,
    }
}

pub(super) fn rand_bytes() -> [u8; 6] {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("the OS random source failed");
    b
}

#[cfg(test)]
mod tests {
    /// The x86-64 rename program, run on this machine when it is one: pairs are renamed in
    /// order, and the first failure's errno is the exit status.
    #[test]
    fn the_rename_program_renames_in_pairs_and_reports_errno() {
        use std::os::unix::fs::PermissionsExt;
        assert!(super::rename_program("s390x").is_none());
        assert_eq!(super::rename_program("arm64").unwrap().len(), 120 + 22 * 4);
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("rename");
        std::fs::write(&prog, super::rename_program("amd64").unwrap()).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("t0"), b"zero").unwrap();
        std::fs::write(p("t1"), b"one").unwrap();
        std::fs::write(p("b"), b"old").unwrap();
        let status = std::process::Command::new(&prog)
            .args([p("t0"), p("a"), p("t1"), p("b")])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(0));
        assert_eq!(std::fs::read(p("a")).unwrap(), b"zero");
        assert_eq!(std::fs::read(p("b")).unwrap(), b"one", "replaced");
        assert!(!p("t0").exists() && !p("t1").exists());
        // No arguments: nothing to do.
        assert_eq!(
            std::process::Command::new(&prog).status().unwrap().code(),
            Some(0)
        );
        // A missing source: ENOENT (2), and the pairs after it are not touched.
        std::fs::write(p("t2"), b"two").unwrap();
        let status = std::process::Command::new(&prog)
            .args([p("missing"), p("x"), p("t2"), p("c")])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(2));
        assert!(p("t2").exists() && !p("c").exists());
        // A file onto a folder: EISDIR (21).
        std::fs::create_dir(p("d")).unwrap();
        let status = std::process::Command::new(&prog)
            .args([p("t2"), p("d")])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(21));
    }

    #[test]
    fn the_unlink_program_is_a_well_formed_elf() {
        assert!(super::unlink_program("s390x").is_none());
        let arm = super::unlink_program("arm64").unwrap();
        assert_eq!(arm.len(), 120 + 32);
        assert_eq!(
            u16::from_le_bytes(arm[18..20].try_into().unwrap()),
            0xb7,
            "AArch64"
        );
        let elf = super::unlink_program("amd64").unwrap();
        assert_eq!(elf.len(), 143);
        assert_eq!(&elf[..4], b"\x7fELF");
        // Entry point right after the two headers.
        assert_eq!(
            u64::from_le_bytes(elf[24..32].try_into().unwrap()),
            0x40_0000 + 120
        );
        // The segment covers the whole file.
        assert_eq!(u64::from_le_bytes(elf[96..104].try_into().unwrap()), 143);
    }
}
