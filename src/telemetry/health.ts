/**
 * The periodic health snapshot on `{base}/{device}/health`. Only cheap reads run on the timer: a
 * handful of small /proc and /sys files (read synchronously: see readTextSync), statfs of the model directory, process counters
 * and the stats objects' getters. The slow facts (board, CPU model, cgroup layout) are probed once
 * at start-up. Every field is always present; what this machine cannot tell is null.
 */
import os from "node:os";
import {statfsSync} from "node:fs";
import {join} from "node:path";
import {defaultReserveBytes} from "../models/planner.js";
import {readTemperatureC, readTextSync, type DeviceFacts} from "../system/probe.js";
import type {ThrottleReader, ThrottleState} from "../system/throttle.js";
import {withTimeout} from "../util/timeout.js";
import type {DeviceState} from "./status.js";
import type {InferenceFigures} from "./inference-stats.js";
import type {RouteCounters} from "../routes/router.js";

export interface HostMemory {
    totalBytes: number;
    availableBytes: number;
    freeBytes: number;
    swapTotalBytes: number;
    swapFreeBytes: number;
    processRssBytes: number;
    cgroupLimitBytes: number | null;
    cgroupUsageBytes: number | null;
    /** limit − (usage − inactive file cache): what the cgroup can still take */
    cgroupHeadroomBytes: number | null;
}

export interface HostCpu {
    cores: number;
    /** CPUs this process may use (affinity, cgroup quota) */
    available: number;
    load1: number;
    load5: number;
    load15: number;
    /** whole machine, 0-100, since the previous sample */
    usagePercent: number | null;
    /** this process, percent of one CPU (top style, may exceed 100), since the previous sample */
    processPercent: number | null;
    temperatureC: number | null;
    throttling: ThrottleState | null;
}

export interface HostDisk {
    path: string;
    freeBytes: number;
    totalBytes: number;
}

export interface HostSample {
    memory: HostMemory;
    cpu: HostCpu;
    disk: HostDisk | null;
}

export interface HealthMessage {
    device: string;
    at: string;
    uptimeSeconds: number;
    intervalSeconds: number;
    state: DeviceState;
    memory: HostMemory & {
        /** what the planner would have to spend now: the tightest headroom minus its reserve (see memoryBudget) */
        budgetBytes: number;
    };
    cpu: HostCpu;
    disk: HostDisk | null;
    inference: Omit<InferenceFigures, "promptSeconds" | "generationSeconds"> & {
        model: string;
        modelState: "loading" | "ready" | "failed";
        queued: number;
        running: number;
        paused: boolean;
        /** prompt reuse (docs/PROMPT-REUSE.md): requests that reused evaluated tokens, that did not, tokens reused, checkpoint memory */
        promptCache: {hits: number; misses: number; reusedTokens: number; checkpointBytes: number};
    };
    mqtt: {connected: boolean; reconnects: number; lastConnectAt: string | null};
    /**
     * The job journal: accepted requests not answered yet, and journal records skipped at start as
     * unreadable (a torn or damaged line; a skipped accept record is a request that was lost).
     */
    jobs: {pending: number; damagedAtStart: number;
        /** final replies the broker would not take, given up after retries (their jobs left the journal) */
        repliesDropped: number};
    /** each configured route's counters (docs/ROUTES.md); {} without routes */
    routes: Record<string, RouteCounters>;
    /** conversations kept (docs/PROMPT-REUSE.md): how many, their history tokens, forgotten for a bound, files not written or read */
    conversations: {count: number; tokens: number; evicted: number; storageErrors: number};
    /** wall time this snapshot took to collect */
    collectMs: number;
}

export interface HostSamplerOptions {
    /** root of /proc and /sys; "/" for the live machine */
    root: string;
    /** directories whose file system holds the models, in order of preference (the first that exists is reported) */
    diskPaths: string[];
    /** probed once at start-up */
    facts: DeviceFacts;
    throttle: ThrottleReader;
}

interface CpuTimes {
    busy: number;
    total: number;
}

export class HostSampler {
    private readonly o: HostSamplerOptions;
    private cgroupDir: string | null | undefined = undefined;
    private lastCpu: CpuTimes | null = null;
    private lastProcess: {cpu: NodeJS.CpuUsage; at: bigint} | null = null;

    public constructor(options: HostSamplerOptions) {
        this.o = options;
    }

    public async sample(): Promise<HostSample> {
        const {root, facts} = this.o;
        const live = root === "/" || root === "";
        const meminfo = readTextSync(root, "proc/meminfo");
        const loadavg = readTextSync(root, "proc/loadavg");
        const [cpuTimes, temperatureC, throttling, disk, cgroup] = await Promise.all([
            this.readCpuTimes(live), readTemperatureC(root), this.o.throttle.read(), this.readDisk(), this.readCgroup()
        ]);
        const kib = parseMeminfo(meminfo);
        const loads = (loadavg ?? "").trim().split(/\s+/).slice(0, 3).map(Number);
        const [load1, load5, load15] = loads.length === 3 && loads.every(Number.isFinite) ? loads as [number, number, number]
            : live ? os.loadavg() as [number, number, number] : [0, 0, 0];
        const limit = facts.memory.cgroup.limitBytes;
        return {
            memory: {
                totalBytes: kib("MemTotal") ?? facts.memory.totalBytes,
                availableBytes: kib("MemAvailable") ?? facts.memory.availableBytes,
                freeBytes: kib("MemFree") ?? facts.memory.freeBytes,
                swapTotalBytes: kib("SwapTotal") ?? facts.memory.swapTotalBytes,
                swapFreeBytes: kib("SwapFree") ?? facts.memory.swapFreeBytes,
                processRssBytes: process.memoryUsage.rss(),
                cgroupLimitBytes: limit,
                cgroupUsageBytes: cgroup.usage,
                cgroupHeadroomBytes: limit !== null && cgroup.usage !== null ? Math.max(0, limit - Math.max(0, cgroup.usage - (cgroup.inactiveFile ?? 0))) : null
            },
            cpu: {
                cores: facts.cpu.logical, available: facts.cpu.available, load1, load5, load15,
                usagePercent: this.machineUsage(cpuTimes), processPercent: this.processUsage(),
                temperatureC: temperatureC === null ? null : Math.round(temperatureC * 10) / 10, throttling
            },
            disk
        };
    }

    private machineUsage(now: CpuTimes | null): number | null {
        const previous = this.lastCpu;
        this.lastCpu = now;
        if (!now || !previous || now.total <= previous.total) return null;
        return round1((100 * (now.busy - previous.busy)) / (now.total - previous.total));
    }

    private processUsage(): number | null {
        const now = {cpu: process.cpuUsage(), at: process.hrtime.bigint()};
        const previous = this.lastProcess;
        this.lastProcess = now;
        if (!previous) return null;
        const wallMicros = Number(now.at - previous.at) / 1000;
        if (wallMicros <= 0) return null;
        const used = now.cpu.user - previous.cpu.user + now.cpu.system - previous.cpu.system;
        return round1((100 * used) / wallMicros);
    }

    /** The first line of /proc/stat; os.cpus() only where there is no /proc (not Linux). */
    private async readCpuTimes(live: boolean): Promise<CpuTimes | null> {
        const stat = readTextSync(this.o.root, "proc/stat");
        const line = stat?.split("\n").find((l) => l.startsWith("cpu "));
        if (line) {
            const v = line.trim().split(/\s+/).slice(1).map(Number);
            // user nice system idle iowait irq softirq steal; guest time is already in user
            const total = v.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
            const idle = (v[3] ?? 0) + (v[4] ?? 0);
            return {busy: total - idle, total};
        }
        if (!live) return null;
        let busy = 0;
        let total = 0;
        for (const cpu of os.cpus()) {
            const t = cpu.times;
            total += t.user + t.nice + t.sys + t.idle + t.irq;
            busy += t.user + t.nice + t.sys + t.irq;
        }
        return {busy, total};
    }

    private async readDisk(): Promise<HostDisk | null> {
        for (const path of this.o.diskPaths) {
            try {
                const s = statfsSync(path);
                return {path, freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize};
            } catch {
                // model.dir may not exist yet (nothing downloaded): try the next
            }
        }
        return null;
    }

    /** Usage of the cgroup the probe found at start-up: two small files instead of a tree walk. */
    private async readCgroup(): Promise<{usage: number | null; inactiveFile: number | null}> {
        const c = this.o.facts.memory.cgroup;
        if (c.version === null) return {usage: null, inactiveFile: null};
        if (this.cgroupDir === undefined) {
            const mount = c.version === 1 ? "sys/fs/cgroup/memory"
                : readTextSync(this.o.root, "sys/fs/cgroup/cgroup.controllers") !== null ? "sys/fs/cgroup" : "sys/fs/cgroup/unified";
            this.cgroupDir = join(mount, c.path ?? "/");
        }
        if (this.cgroupDir === null) return {usage: null, inactiveFile: null};
        const usageText = readTextSync(this.o.root, join(this.cgroupDir, c.version === 2 ? "memory.current" : "memory.usage_in_bytes"));
        const stat = readTextSync(this.o.root, join(this.cgroupDir, "memory.stat"));
        const usage = usageText === null ? null : Number(usageText.trim());
        const key = c.version === 2 ? "inactive_file" : "total_inactive_file";
        const line = stat?.split("\n").find((l) => l.startsWith(`${key} `));
        const inactive = line === undefined ? null : Number(line.slice(key.length + 1));
        return {usage: usage !== null && Number.isFinite(usage) ? usage : null, inactiveFile: inactive !== null && Number.isFinite(inactive) ? inactive : null};
    }
}

/**
 * The planner's budget, now: per limit (MemAvailable of MemTotal, the cgroup's headroom of its limit)
 * the headroom minus the reserve (`model.reserveBytes`, or the planner's default share of that
 * limit when 0), and the smallest of those; never below 0.
 */
export function memoryBudget(memory: HostMemory, reserveBytes: number): number {
    const reserve = (size: number): number => reserveBytes > 0 ? reserveBytes : defaultReserveBytes(size);
    let budget = memory.availableBytes - reserve(memory.totalBytes);
    if (memory.cgroupLimitBytes !== null && memory.cgroupHeadroomBytes !== null)
        budget = Math.min(budget, memory.cgroupHeadroomBytes - reserve(memory.cgroupLimitBytes));
    return Math.max(0, budget);
}

function parseMeminfo(text: string | null): (key: string) => number | null {
    const values = new Map<string, number>();
    for (const line of (text ?? "").split("\n")) {
        const match = /^([^:]+):\s+(\d+)(?:\s*kB)?$/.exec(line.trim());
        if (match?.[1] && match[2]) values.set(match[1], Number(match[2]) * 1024);
    }
    return (key) => values.get(key) ?? null;
}


function round1(value: number): number {
    return Math.round(value * 10) / 10;
}

export interface HealthMonitorDeps {
    intervalMs: number;
    /** collects and publishes one snapshot; must not reject */
    tick: () => Promise<void>;
}

/**
 * Runs `tick` every interval, never two at once: a slow snapshot (a stalled SD card) delays the
 * next one instead of piling them up. The timer is unref'ed so it never keeps the process alive.
 */
export class HealthMonitor {
    private readonly deps: HealthMonitorDeps;
    private timer: NodeJS.Timeout | null = null;
    private running: Promise<void> | null = null;
    private stopped = false;

    public constructor(deps: HealthMonitorDeps) {
        this.deps = deps;
    }

    public start(): void {
        this.stopped = false;
        this.schedule(0);
    }

    /** Runs a snapshot now (e.g. right after connecting) unless one is running. */
    public now(): void {
        if (this.stopped || this.running) return;
        if (this.timer) clearTimeout(this.timer);
        this.schedule(0);
    }

    /** Stops the timer and waits for a running snapshot, at most `waitMs` (a stalled disk must not hold shutdown). */
    public async stop(waitMs = 1000): Promise<void> {
        this.stopped = true;
        if (this.timer) clearTimeout(this.timer);
        this.timer = null;
        if (!this.running) return;
        await withTimeout(this.running, waitMs, () => undefined);
    }

    private schedule(delayMs: number): void {
        this.timer = setTimeout(() => {
            this.timer = null;
            const started = Date.now();
            this.running = this.deps.tick().finally(() => {
                this.running = null;
                if (!this.stopped) this.schedule(Math.max(0, this.deps.intervalMs - (Date.now() - started)));
            });
        }, delayMs);
        this.timer.unref();
    }
}
