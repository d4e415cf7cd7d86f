/**
 * A small filesystem in a private mount namespace, for storage faults: a full card, a read-only one,
 * one the kernel turns read-only under the daemon. A sleeping holder process keeps the namespace (and
 * the mount) alive, so daemons can be started in it (`nsenter -m`), killed and started again on what
 * they left; the test reaches the files through /proc/<holder>/root, fills the filesystem, remounts
 * it, or (ext4 on a loop device) makes it fail. Needs root (CI runs as root); `privateTmpfs` and
 * `privateExt4` say why when it cannot be had, for the case to skip.
 */
import {spawn, spawnSync, type ChildProcess} from "node:child_process";
import {closeSync, copyFileSync, mkdirSync, openSync, rmSync, statfsSync, truncateSync, writeFileSync, writeSync} from "node:fs";
import {basename, join} from "node:path";

export interface PrivateMount {
    /** the mount point, as the daemon (inside the namespace) sees it */
    readonly path: string;
    /** the holder's pid: the namespace is /proc/<pid>/ns/mnt */
    readonly pid: number;
    /** the command prefix that runs a program inside the namespace (execs it: the pid stays the program's) */
    readonly prefix: string[];
    /** `path`, or a file under it, as seen from the test (outside the namespace) */
    outside(relative?: string): string;
    /** free bytes on the tmpfs */
    freeBytes(): number;
    /** writes a filler file until the tmpfs is full (ENOSPC); returns the bytes written */
    fill(): number;
    /** deletes the filler: the space comes back */
    unfill(): void;
    /** remounts the tmpfs read-only or read-write; throws with mount's message when it cannot (e.g. EBUSY) */
    remount(mode: "ro" | "rw"): void;
    /** tries a remount, returning mount's error instead of throwing */
    tryRemount(mode: "ro" | "rw"): string | null;
    dispose(): Promise<void>;
}

/** Mounts a tmpfs of `sizeKiB` at `path` in a new mount namespace; a string says why it cannot. */
export async function privateTmpfs(path: string, sizeKiB: number, timeoutMs = 5000): Promise<PrivateMount | string> {
    return privateMount(path, `mount -t tmpfs -o size=${sizeKiB}k,mode=0700 tmpfs "$1"`, [], timeoutMs);
}

export interface PrivateExt4 extends PrivateMount {
    /** an ext4 error, as a failing card gives: with errors=remount-ro the kernel makes the filesystem read-only under its open files */
    forceReadOnly(): void;
    /** what an administrator does next: the filesystem detached, a checked copy (e2fsck -fy) mounted in its place */
    repair(): void;
}

/**
 * An ext4 image of `sizeMiB` (in `imageDir`) mounted on a loop device at `path`, with
 * errors=remount-ro, in a new mount namespace; a string says why it cannot (no root, no loop devices).
 */
export async function privateExt4(path: string, imageDir: string, sizeMiB: number, timeoutMs = 5000): Promise<PrivateExt4 | string> {
    if (process.getuid?.() !== 0) return "needs root to mount an ext4 image in a private mount namespace (unshare -m, loop devices)";
    const image = join(imageDir, "state-fs.img");
    writeFileSync(image, "");
    truncateSync(image, sizeMiB * 1024 * 1024);
    const mkfs = spawnSync("mkfs.ext4", ["-q", "-F", image], {encoding: "utf8"});
    if (mkfs.status !== 0) return `mkfs.ext4 failed: ${mkfs.error?.message ?? mkfs.stderr.trim()}`;
    const m = await privateMount(path, `mount -o loop,errors=remount-ro "$2" "$1"`, [image], timeoutMs);
    if (typeof m === "string") return m;
    return {
        ...m,
        forceReadOnly: () => {
            const source = m.inside(["findmnt", "-n", "-o", "SOURCE", path]);
            const device = basename(source.stdout.trim());
            if (source.status !== 0 || !device.startsWith("loop")) throw new Error(`no loop device under ${path}: ${source.stderr}`);
            writeFileSync(`/sys/fs/ext4/${device}/trigger_fs_error`, "1");
        },
        repair: () => {
            const run = (what: string, r: {status: number | null; stderr: string}, ok: number[] = [0]): void => {
                if (!ok.includes(r.status ?? -1)) throw new Error(`${what} failed (${r.status}): ${r.stderr}`);
            };
            run("umount -l", m.inside(["umount", "-l", path]));
            const checked = join(imageDir, "state-fs-checked.img");
            copyFileSync(image, checked);
            const fsck = spawnSync("e2fsck", ["-fy", checked], {encoding: "utf8"});
            run("e2fsck -fy", {status: fsck.status, stderr: fsck.stderr}, [0, 1]); // 1: errors corrected
            run("mount", m.inside(["mount", "-o", "loop,errors=remount-ro", checked, path]));
        }
    };
}

/** The holder: `mount` (a shell command, $1 the mount point, then `args`) in a new mount namespace, then asleep. */
async function privateMount(path: string, mount: string, args: string[], timeoutMs: number):
    Promise<(PrivateMount & {inside(args: string[]): {status: number | null; stdout: string; stderr: string}}) | string> {
    if (process.getuid?.() !== 0) return "needs root to mount a filesystem in a private mount namespace (unshare -m)";
    mkdirSync(path, {recursive: true});
    let holder: ChildProcess;
    try {
        holder = spawn("unshare", ["-m", "--propagation", "private", "sh", "-c", `${mount} && echo mounted && exec sleep 86400`, "sh", path, ...args],
            {stdio: ["ignore", "pipe", "pipe"]});
    } catch (err) {
        return `cannot run unshare: ${(err as Error).message}`;
    }
    let output = "";
    const mounted = await new Promise<string | null>((resolve) => {
        const timer = setTimeout(() => resolve(`nothing was mounted within ${timeoutMs} ms: ${output.trim()}`), timeoutMs);
        const done = (problem: string | null): void => {
            clearTimeout(timer);
            resolve(problem);
        };
        holder.stdout?.on("data", (d: Buffer) => {
            output += d.toString();
            if (output.includes("mounted")) done(null);
        });
        holder.stderr?.on("data", (d: Buffer) => { output += d.toString(); });
        holder.once("error", (err) => done(`cannot run unshare: ${err.message}`));
        holder.once("exit", (code) => done(`unshare -m and mount failed (exit ${code}): ${output.trim()}`));
    });
    if (mounted !== null) {
        holder.kill("SIGKILL");
        return mounted;
    }
    const pid = holder.pid!;
    const outside = (relative = ""): string => join(`/proc/${pid}/root`, path, relative);
    const filler = outside("filler");
    const inside = (args: string[]): {status: number | null; stdout: string; stderr: string} => {
        const r = spawnSync("nsenter", ["-t", String(pid), "-m", "--", ...args], {encoding: "utf8"});
        return {status: r.status, stdout: r.stdout ?? "", stderr: (r.error?.message ?? r.stderr).trim()};
    };
    const tryRemount = (mode: "ro" | "rw"): string | null => {
        const r = inside(["mount", "-o", `remount,${mode}`, path]);
        return r.status === 0 ? null : r.stderr || `mount exited ${r.status}`;
    };
    return {
        path, pid, inside,
        prefix: ["nsenter", "-t", String(pid), "-m", "--"],
        outside,
        freeBytes: () => {
            const s = statfsSync(outside());
            return s.bavail * s.bsize;
        },
        fill: () => {
            const fd = openSync(filler, "a");
            let written = 0;
            try {
                // big writes first, then page by page: a tmpfs takes a write up to its last free page
                for (const size of [1024 * 1024, 4096, 1]) {
                    const chunk = Buffer.alloc(size, 1);
                    for (;;) {
                        try {
                            const n = writeSync(fd, chunk);
                            written += n;
                            if (n < chunk.length) break;
                        } catch (err) {
                            if ((err as NodeJS.ErrnoException).code === "ENOSPC") break;
                            throw err;
                        }
                    }
                }
            } finally {
                closeSync(fd);
            }
            return written;
        },
        unfill: () => rmSync(filler, {force: true}),
        remount: (mode) => {
            const problem = tryRemount(mode);
            if (problem !== null) throw new Error(`remount ${mode} of ${path} failed: ${problem}`);
        },
        tryRemount,
        dispose: async () => {
            if (holder.exitCode !== null || holder.signalCode !== null) return;
            const exited = new Promise<void>((resolve) => holder.once("exit", () => resolve()));
            holder.kill("SIGKILL");
            await exited;
        }
    };
}
