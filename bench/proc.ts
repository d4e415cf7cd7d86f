/**
 * What the benchmark reads about processes and the machine: /proc for another process's CPU time
 * and memory (the daemon is a child, so process.cpuUsage() cannot see it), os for the machine.
 */
import {execFileSync} from "node:child_process";
import {readdirSync, readFileSync} from "node:fs";
import os from "node:os";

/** Clock ticks per second for /proc/<pid>/stat times; 100 on every Linux we target, asked once. */
let clockTicks: number | null = null;
function ticksPerSecond(): number {
    if (clockTicks === null) {
        try {
            clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], {encoding: "utf8"}).trim()) || 100;
        } catch {
            clockTicks = 100;
        }
    }
    return clockTicks;
}

/** utime + stime of every thread of `pid`, in seconds. */
export function processCpuSeconds(pid: number): number {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces and parentheses: split after the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / ticksPerSecond();
}

export interface ProcessMemory {
    rssBytes: number;
    /** anonymous memory: heaps, llama.cpp buffers (KV cache, compute buffer) */
    rssAnonBytes: number;
    /** file-backed pages: the mmapped model and the binaries */
    rssFileBytes: number;
    rssShmemBytes: number;
    /** high-water mark */
    hwmBytes: number;
}

export function processMemory(pid: number): ProcessMemory {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kib = (key: string): number => {
        const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status);
        return m?.[1] ? Number(m[1]) * 1024 : 0;
    };
    return {rssBytes: kib("VmRSS"), rssAnonBytes: kib("RssAnon"), rssFileBytes: kib("RssFile"), rssShmemBytes: kib("RssShmem"),
        hwmBytes: kib("VmHWM")};
}

/** Resident bytes of the mappings of `file` in `pid` (from smaps): what the model itself occupies. */
export function mappedFileRssBytes(pid: number, file: string): number | null {
    let smaps: string;
    try {
        smaps = readFileSync(`/proc/${pid}/smaps`, "utf8");
    } catch {
        return null;
    }
    let inFile = false;
    let total = 0;
    for (const line of smaps.split("\n")) {
        if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inFile = line.endsWith(` ${file}`);
        else if (inFile && line.startsWith("Rss:")) total += Number(/(\d+)/.exec(line)?.[1] ?? 0) * 1024;
    }
    return total;
}

export interface MachineInfo {
    cpuModel: string;
    cores: number;
    availableParallelism: number;
    memTotalMB: number;
    kernel: string;
    platform: string;
    arch: string;
}

export function machineInfo(): MachineInfo {
    const cpus = os.cpus();
    return {
        cpuModel: cpus[0]?.model.trim() ?? "unknown", cores: cpus.length, availableParallelism: os.availableParallelism(),
        memTotalMB: Math.round(os.totalmem() / 2 ** 20), kernel: os.release(), platform: process.platform, arch: process.arch
    };
}

/** CPU seconds spent by the whole machine (all cores, not idle or iowait) since boot. */
function machineBusySeconds(): number {
    const line = readFileSync("/proc/stat", "utf8").split("\n").find((l) => l.startsWith("cpu "));
    const v = (line ?? "").trim().split(/\s+/).slice(1, 9).map(Number);
    const total = v.reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
    return (total - (v[3] ?? 0) - (v[4] ?? 0)) / ticksPerSecond();
}

export interface LoadWindow {
    seconds: number;
    /** cores kept busy by everything on the machine */
    machineCores: number;
    /** cores kept busy by this benchmark and its daemons */
    benchCores: number;
    /** machineCores - benchCores: other people's work, the noise */
    otherCores: number;
    load1: number;
}

/**
 * Measures, over a window, how much CPU the machine spent outside this benchmark: the machine is
 * shared, so every phase records how noisy it was.
 */
export class LoadMeter {
    private readonly start: {at: number; machine: number; ours: number};

    public constructor(private readonly pids: () => number[]) {
        this.start = {at: Date.now(), machine: machineBusySeconds(), ours: this.oursSeconds()};
    }

    public stop(): LoadWindow {
        const seconds = (Date.now() - this.start.at) / 1000;
        const machine = (machineBusySeconds() - this.start.machine) / seconds;
        const ours = (this.oursSeconds() - this.start.ours) / seconds;
        const r = (x: number): number => Math.round(x * 100) / 100;
        return {seconds: r(seconds), machineCores: r(machine), benchCores: r(ours), otherCores: r(Math.max(0, machine - ours)),
            load1: r(os.loadavg()[0] ?? 0)};
    }

    private oursSeconds(): number {
        let total = processCpuSeconds(process.pid);
        for (const pid of this.pids()) {
            try {
                total += processCpuSeconds(pid);
            } catch {
                // exited meanwhile
            }
        }
        return total;
    }
}

/** The pid of a process whose command line contains `needle` (e.g. a broker's config path), or null. */
export function findPid(needle: string): number | null {
    for (const entry of readdirSync("/proc")) {
        if (!/^\d+$/.test(entry)) continue;
        try {
            if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(needle)) return Number(entry);
        } catch {
            // gone meanwhile
        }
    }
    return null;
}
