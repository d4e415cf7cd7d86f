/**
 * A small tmpfs in a private mount namespace, for storage faults: a full card, a read-only one. A
 * sleeping holder process keeps the namespace (and the tmpfs) alive, so daemons can be started in
 * it (`nsenter -m`), killed and started again on what they left; the test reaches the files through
 * /proc/<holder>/root, fills the tmpfs and remounts it read-only or read-write. Needs root (CI runs
 * as root); `privateTmpfs` says why when it cannot be had, for the case to skip.
 */
import {spawn, spawnSync, type ChildProcess} from "node:child_process";
import {mkdirSync, openSync, closeSync, writeSync, rmSync, statfsSync} from "node:fs";
import {join} from "node:path";

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
    if (process.getuid?.() !== 0) return "needs root to mount a tmpfs in a private mount namespace (unshare -m)";
    mkdirSync(path, {recursive: true});
    let holder: ChildProcess;
    try {
        holder = spawn("unshare", ["-m", "--propagation", "private", "sh", "-c",
            `mount -t tmpfs -o size=${sizeKiB}k,mode=0700 tmpfs "$1" && echo mounted && exec sleep 86400`, "sh", path],
        {stdio: ["ignore", "pipe", "pipe"]});
    } catch (err) {
        return `cannot run unshare: ${(err as Error).message}`;
    }
    let output = "";
    const mounted = await new Promise<string | null>((resolve) => {
        const timer = setTimeout(() => resolve(`the tmpfs was not mounted within ${timeoutMs} ms: ${output.trim()}`), timeoutMs);
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
    const inside = (args: string[]): {status: number | null; stderr: string} => {
        const r = spawnSync("nsenter", ["-t", String(pid), "-m", "--", ...args], {encoding: "utf8"});
        return {status: r.status, stderr: (r.error?.message ?? r.stderr).trim()};
    };
    const tryRemount = (mode: "ro" | "rw"): string | null => {
        const r = inside(["mount", "-o", `remount,${mode}`, path]);
        return r.status === 0 ? null : r.stderr || `mount exited ${r.status}`;
    };
    return {
        path, pid,
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
