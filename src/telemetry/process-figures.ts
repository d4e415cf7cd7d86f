/**
 * The standard `process_*` figures Prometheus client libraries export (CPU seconds, resident and
 * virtual memory, open and maximum file descriptors, start time), read from /proc/self at scrape
 * time the way the Go client does, without a dependency. Where there is no /proc (not Linux) the
 * figures Node has stand in and the others are null (left out of the exposition).
 */
import {readdirSync} from "node:fs";
import {readTextSync} from "../system/probe.js";

export interface ProcessFigures {
    cpuSeconds: number;
    residentBytes: number;
    virtualBytes: number | null;
    openFds: number | null;
    maxFds: number | null;
    startTimeSeconds: number;
}

/**
 * /proc/self/stat counts CPU time and the start time in clock ticks (USER_HZ), which is 100 on every
 * Linux architecture Node runs on; the Go client assumes the same.
 */
const TICKS_PER_SECOND = 100;

export function readProcessFigures(root = "/"): ProcessFigures {
    const fromNode = nodeFigures();
    const stat = readTextSync(root, "proc/self/stat");
    // Fields after the command name, which is in parentheses and may itself contain spaces.
    const fields = stat === null ? [] : stat.slice(stat.lastIndexOf(")") + 2).trim().split(/\s+/).map(Number);
    const utime = fields[11];
    const stime = fields[12];
    const startTicks = fields[19];
    const vsize = fields[20];
    const bootTime = /^btime (\d+)$/m.exec(readTextSync(root, "proc/stat") ?? "")?.[1];
    const rssKiB = /^VmRSS:\s+(\d+) kB$/m.exec(readTextSync(root, "proc/self/status") ?? "")?.[1];
    const limit = /^Max open files\s+(\d+|unlimited)\s/m.exec(readTextSync(root, "proc/self/limits") ?? "")?.[1];
    const finite = (n: number | undefined): n is number => n !== undefined && Number.isFinite(n);
    return {
        cpuSeconds: finite(utime) && finite(stime) ? (utime + stime) / TICKS_PER_SECOND : fromNode.cpuSeconds,
        residentBytes: rssKiB !== undefined ? Number(rssKiB) * 1024 : fromNode.residentBytes,
        virtualBytes: finite(vsize) ? vsize : null,
        openFds: countOpenFds(root),
        maxFds: limit !== undefined && limit !== "unlimited" ? Number(limit) : null,
        startTimeSeconds: finite(startTicks) && bootTime !== undefined ? Number(bootTime) + startTicks / TICKS_PER_SECOND : fromNode.startTimeSeconds
    };
}

function nodeFigures(): Pick<ProcessFigures, "cpuSeconds" | "residentBytes" | "startTimeSeconds"> {
    const cpu = process.cpuUsage();
    return {cpuSeconds: (cpu.user + cpu.system) / 1e6, residentBytes: process.memoryUsage.rss(),
        startTimeSeconds: Math.round(Date.now() / 1000 - process.uptime())};
}

function countOpenFds(root: string): number | null {
    try {
        // The listing includes the descriptor used to read the directory, as the Go client's count does.
        return readdirSync(`${root.replace(/\/$/, "")}/proc/self/fd`).length;
    } catch {
        return null;
    }
}
