/**
 * Device facts for the planner and telemetry: memory (MemAvailable, cgroup v1/v2 limits), CPUs, board.
 * Every read goes through a root path, so tests can point the probe at a recorded /proc + /sys tree.
 * A missing or unreadable file is a normal answer (null), never an error: a probe must not stop a daemon.
 */
import {readdirSync, readFileSync} from "node:fs";
import {readFile, readdir} from "node:fs/promises";
import {join} from "node:path";
import os from "node:os";

export interface CgroupMemoryFacts {
    version: 1 | 2 | null;
    /** The smallest memory limit of the process's cgroup and its ancestors (v2 memory.max/memory.high, v1 memory.limit_in_bytes). */
    limitBytes: number | null;
    /** Usage of the cgroup whose limit binds (v2 memory.current, v1 memory.usage_in_bytes), page cache included. */
    usageBytes: number | null;
    /** Inactive file cache in that usage; the kernel reclaims it before it would OOM-kill. */
    inactiveFileBytes: number | null;
    /** Room left: min over limited levels of limit − (usage − inactive_file), as `docker stats` and kubelet count it. */
    headroomBytes: number | null;
    /** v2 memory.swap.max, v1 memsw limit − memory limit; null when unlimited or unknown. */
    swapLimitBytes?: number | null;
    /** cgroup path (inside the mount) of the level whose limit binds. */
    path?: string | null;
}

export interface MemoryFacts {
    totalBytes: number;
    availableBytes: number;
    freeBytes: number;
    swapTotalBytes: number;
    swapFreeBytes: number;
    cgroup: CgroupMemoryFacts;
    /** process.constrainedMemory() when probing the live root, else null. */
    constrainedBytes: number | null;
}

export interface CpuFacts {
    logical: number;
    /** min(logical, cgroup CPU quota rounded up, CPU affinity) */
    available: number;
    /** cgroup CPU quota in CPUs (v2 cpu.max, v1 cfs_quota_us / cfs_period_us), null when unlimited. */
    quota: number | null;
    /** physical cores (distinct package + core id in sysfs topology), null when sysfs does not say */
    physicalCores: number | null;
    model: string | null;
}

export interface BoardFacts {
    arch: string;
    /** SIMD features that decide llama.cpp's weight repacking (src/models/repack.ts), e.g. avx2, asimddp */
    simd: string[];
    /** Device-tree model (Raspberry Pi and other ARM boards) or DMI product name (x86); null when unknown or a placeholder. */
    model: string | null;
    /** The maker: "Raspberry Pi Ltd" for a Pi, the DMI system vendor on x86; null when unknown. */
    vendor: string | null;
    isRaspberryPi: boolean;
}

export interface DeviceFacts {
    memory: MemoryFacts;
    cpu: CpuFacts;
    board: BoardFacts;
}

export interface ProbeOptions {
    /** Root of the /proc and /sys tree to read; default "/". */
    root?: string;
}

/** cgroup v1 writes "unlimited" as a page-aligned 2^63 − 1; anything this large means no limit. */
const UNLIMITED_THRESHOLD = 2 ** 62;

export async function probeDevice(options: ProbeOptions = {}): Promise<DeviceFacts> {
    const root = options.root ?? "/";
    const live = isLiveRoot(root);
    const [cgroups, cpuinfo, status] = await Promise.all([
        readCgroupMembership(root), readText(root, "proc/cpuinfo"), readText(root, "proc/self/status")
    ]);
    const [memory, cpu, board] = await Promise.all([
        probeMemory(root, live, cgroups), probeCpu(root, live, cgroups, cpuinfo, status), probeBoard(root, live, cpuinfo)
    ]);
    return {memory, cpu, board};
}

/** Only the CPU part of probeDevice: what the default thread count needs at start-up. */
export async function probeCpuFacts(options: ProbeOptions = {}): Promise<CpuFacts> {
    const root = options.root ?? "/";
    const [cgroups, cpuinfo, status] = await Promise.all([
        readCgroupMembership(root), readText(root, "proc/cpuinfo"), readText(root, "proc/self/status")
    ]);
    return probeCpu(root, isLiveRoot(root), cgroups, cpuinfo, status);
}

/** Hottest thermal zone in °C (sysfs gives millidegrees), or null when the device exposes none. */
export async function readTemperatureC(root = "/"): Promise<number | null> {
    // Synchronous reads: this runs in every health snapshot, and libuv's one pool thread belongs to
    // the model's decodes (src/launcher.cts).
    let zones: string[];
    try {
        zones = readdirSync(join(root, "sys/class/thermal")).filter((name) => /^thermal_zone\d+$/.test(name));
    } catch {
        return null;
    }
    const readings = zones.map((zone) => {
        const n = Number(readTextSync(root, `sys/class/thermal/${zone}/temp`)?.trim() ?? NaN);
        return Number.isFinite(n) ? n : null;
    });
    // Some zones report errors or placeholders (e.g. -273000 or 0 on ACPI stubs): keep plausible readings only.
    const celsius = readings.filter((v): v is number => v !== null).map((v) => v / 1000).filter((c) => c > -40 && c < 150);
    return celsius.length === 0 ? null : Math.max(...celsius);
}

function isLiveRoot(root: string): boolean {
    return root === "/" || root === "";
}

/**
 * A small /proc or /sys file, read synchronously, or null when it cannot be read. For what runs on
 * the health timer: microseconds each, and libuv's one pool thread belongs to the model's decodes.
 */
export function readTextSync(root: string, relativePath: string): string | null {
    try {
        return readFileSync(join(root, relativePath), "utf8");
    } catch {
        return null;
    }
}

async function readText(root: string, relativePath: string): Promise<string | null> {
    try {
        return await readFile(join(root, relativePath), "utf8");
    } catch {
        return null;
    }
}

async function readNumber(root: string, relativePath: string): Promise<number | null> {
    const text = await readText(root, relativePath);
    if (text === null) return null;
    const value = Number(text.trim().split(/\s+/)[0]);
    return Number.isFinite(value) ? value : null;
}

/** A limit file's value: null for "max", "-1", unlimited sentinels, missing or garbled files. */
async function readLimit(root: string, relativePath: string): Promise<number | null> {
    const text = await readText(root, relativePath);
    if (text === null) return null;
    const trimmed = text.trim();
    if (trimmed === "max" || trimmed === "") return null;
    const value = Number(trimmed);
    return Number.isFinite(value) && value >= 0 && value < UNLIMITED_THRESHOLD ? value : null;
}

function parseKeyValues(text: string | null, separator: RegExp): Map<string, string> {
    const map = new Map<string, string>();
    for (const line of (text ?? "").split("\n")) {
        const match = separator.exec(line);
        if (match?.index === undefined || match.index === 0) continue;
        map.set(line.slice(0, match.index).trim(), line.slice(match.index + match[0].length).trim());
    }
    return map;
}

// ---- memory ----

async function probeMemory(root: string, live: boolean, cgroups: CgroupMembership): Promise<MemoryFacts> {
    const meminfo = parseKeyValues(await readText(root, "proc/meminfo"), /:\s*/);
    const kib = (key: string): number | null => {
        const raw = meminfo.get(key);
        if (raw === undefined) return null;
        const value = Number(raw.replace(/\s*kB$/i, ""));
        return Number.isFinite(value) ? value * 1024 : null;
    };
    let totalBytes = kib("MemTotal");
    let freeBytes = kib("MemFree");
    // Kernels before 3.14 have no MemAvailable: free + reclaimable file cache is what it approximates.
    let availableBytes = kib("MemAvailable")
        ?? (freeBytes === null ? null : freeBytes + (kib("Active(file)") ?? 0) + (kib("Inactive(file)") ?? 0) + (kib("SReclaimable") ?? 0));
    if ((totalBytes === null || availableBytes === null) && live) {
        // Not Linux (a developer's Mac): systeminformation's mem().available is the closest to MemAvailable.
        const si = await import("systeminformation");
        const mem = await si.mem();
        totalBytes = mem.total;
        freeBytes = mem.free;
        availableBytes = mem.available;
    }
    return {
        totalBytes: totalBytes ?? 0,
        availableBytes: availableBytes ?? 0,
        freeBytes: freeBytes ?? 0,
        swapTotalBytes: kib("SwapTotal") ?? 0,
        swapFreeBytes: kib("SwapFree") ?? 0,
        cgroup: await probeCgroupMemory(root, cgroups),
        constrainedBytes: live ? constrainedMemory() : null
    };
}

function constrainedMemory(): number | null {
    const fn = (process as {constrainedMemory?: () => number | undefined}).constrainedMemory;
    const value = typeof fn === "function" ? fn.call(process) : undefined;
    // Node 20 returns 0/undefined or an unlimited sentinel (2^64) when there is no constraint.
    return value !== undefined && value > 0 && value < UNLIMITED_THRESHOLD ? value : null;
}

interface CgroupMembership {
    /** The "0::/path" line of cgroup v2. */
    unifiedPath: string | null;
    /** cgroup v1 controller name -> path. */
    v1: Map<string, string>;
}

async function readCgroupMembership(root: string): Promise<CgroupMembership> {
    const membership: CgroupMembership = {unifiedPath: null, v1: new Map()};
    for (const line of (await readText(root, "proc/self/cgroup") ?? "").split("\n")) {
        const match = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
        if (!match) continue;
        const [, id, controllers = "", path = "/"] = match;
        if (id === "0" && controllers === "") membership.unifiedPath = path;
        else for (const controller of controllers.split(",")) membership.v1.set(controller, path);
    }
    return membership;
}

/** Where a cgroup's files are. Without a cgroup namespace a container sees the host's path, yet its mount *is* that cgroup. */
async function cgroupDir(root: string, mount: string, path: string): Promise<{dir: string; levels: string[]}> {
    const parts = path.split("/").filter((p) => p !== "" && p !== "." && p !== "..");
    const exists = parts.length > 0 && await readdir(join(root, mount, ...parts)).then(() => true, () => false);
    const used = exists ? parts : [];
    // Levels from the process's own cgroup up to the mount root: a parent's limit applies to its children.
    const levels: string[] = [];
    for (let n = used.length; n >= 0; n--) levels.push(join(mount, ...used.slice(0, n)));
    return {dir: levels[0] ?? mount, levels};
}

async function detectMemoryVersion(root: string, cgroups: CgroupMembership): Promise<{version: 1 | 2; mount: string; path: string} | null> {
    if (cgroups.v1.has("memory") && await readText(root, "sys/fs/cgroup/memory/memory.limit_in_bytes") !== null) {
        return {version: 1, mount: "sys/fs/cgroup/memory", path: cgroups.v1.get("memory") ?? "/"};
    }
    for (const mount of ["sys/fs/cgroup", "sys/fs/cgroup/unified"]) {
        const controllers = await readText(root, `${mount}/cgroup.controllers`);
        if (controllers !== null && controllers.split(/\s+/).includes("memory")) {
            return {version: 2, mount, path: cgroups.unifiedPath ?? "/"};
        }
    }
    return null;
}

async function probeCgroupMemory(root: string, cgroups: CgroupMembership): Promise<CgroupMemoryFacts> {
    const none: CgroupMemoryFacts = {version: null, limitBytes: null, usageBytes: null, inactiveFileBytes: null, headroomBytes: null, swapLimitBytes: null, path: null};
    const detected = await detectMemoryVersion(root, cgroups);
    if (!detected) return none;
    const {version, mount} = detected;
    const {levels} = await cgroupDir(root, mount, detected.path);
    let best: {limit: number; usage: number | null; inactive: number | null; headroom: number | null; level: string} | null = null;
    for (const [index, level] of levels.entries()) {
        let limit: number | null;
        let usage: number | null;
        const stat = parseKeyValues(await readText(root, `${level}/memory.stat`), /\s+/);
        if (version === 2) {
            limit = minOf(await readLimit(root, `${level}/memory.max`), await readLimit(root, `${level}/memory.high`));
            usage = await readNumber(root, `${level}/memory.current`);
        } else {
            limit = await readLimit(root, `${level}/memory.limit_in_bytes`);
            // hierarchical_memory_limit includes ancestors a container cannot see.
            if (index === 0) limit = minOf(limit, parseLimitValue(stat.get("hierarchical_memory_limit")));
            usage = await readNumber(root, `${level}/memory.usage_in_bytes`);
        }
        if (limit === null) continue;
        const inactive = parseLimitValue(stat.get(version === 2 ? "inactive_file" : "total_inactive_file"));
        const headroom = usage === null ? null : Math.max(0, limit - Math.max(0, usage - (inactive ?? 0)));
        const tighter = best === null || (headroom ?? limit) < (best.headroom ?? best.limit);
        if (tighter) best = {limit, usage, inactive, headroom, level};
    }
    const leaf = levels[0] ?? mount;
    let swapLimitBytes: number | null;
    if (version === 2) {
        swapLimitBytes = await readLimit(root, `${leaf}/memory.swap.max`);
    } else {
        const memsw = await readLimit(root, `${leaf}/memory.memsw.limit_in_bytes`);
        swapLimitBytes = memsw !== null && best !== null ? Math.max(0, memsw - best.limit) : null;
    }
    return {
        version,
        limitBytes: best?.limit ?? null,
        usageBytes: best?.usage ?? await readNumber(root, `${leaf}/${version === 2 ? "memory.current" : "memory.usage_in_bytes"}`),
        inactiveFileBytes: best?.inactive ?? null,
        headroomBytes: best?.headroom ?? null,
        swapLimitBytes,
        path: "/" + (best?.level ?? leaf).slice(mount.length).replace(/^\/+/, "")
    };
}

function parseLimitValue(raw: string | undefined): number | null {
    if (raw === undefined) return null;
    const value = Number(raw);
    return Number.isFinite(value) && value >= 0 && value < UNLIMITED_THRESHOLD ? value : null;
}

function minOf(a: number | null, b: number | null): number | null {
    if (a === null) return b;
    if (b === null) return a;
    return Math.min(a, b);
}

// ---- CPU ----

async function probeCpu(root: string, live: boolean, cgroups: CgroupMembership, cpuinfo: string | null, status: string | null): Promise<CpuFacts> {
    const processors = (cpuinfo ?? "").split("\n").filter((line) => /^processor\s*:/.test(line)).length;
    const logical = processors > 0 ? processors : live ? os.cpus().length : 1;
    const affinity = parseCpuList(parseKeyValues(status, /:\s*/).get("Cpus_allowed_list"))
        ?? (live ? os.availableParallelism() : null);
    const quota = await readCpuQuota(root, cgroups);
    const limits = [logical, affinity ?? logical, quota === null ? logical : Math.max(1, Math.ceil(quota))];
    return {logical, available: Math.min(...limits), quota, physicalCores: await countPhysicalCores(root, logical), model: cpuModel(cpuinfo)};
}

/** Distinct (package, core) pairs over cpu0..cpuN-1; SMT siblings share one. */
async function countPhysicalCores(root: string, logical: number): Promise<number | null> {
    const cores = new Set<string>();
    for (let i = 0; i < logical; i++) {
        const [pkg, core] = await Promise.all([
            readText(root, `sys/devices/system/cpu/cpu${i}/topology/physical_package_id`),
            readText(root, `sys/devices/system/cpu/cpu${i}/topology/core_id`)
        ]);
        if (core === null) return null;
        cores.add(`${pkg?.trim() ?? "0"}:${core.trim()}`);
    }
    return cores.size > 0 ? cores.size : null;
}

/**
 * The default generation thread count: every CPU this process may use (affinity, cgroup quota),
 * but not more than the physical cores (SMT siblings share one core's execution units; llama.cpp's
 * own default is the physical core count too). docs/ENGINE-SPEED.md has the measurements.
 */
export function defaultThreads(cpu: CpuFacts): number {
    return Math.max(1, Math.min(cpu.available, cpu.physicalCores ?? cpu.available));
}

/** "0-3,6" -> 5 */
export function parseCpuList(list: string | undefined): number | null {
    if (list === undefined || list.trim() === "") return null;
    let count = 0;
    for (const range of list.trim().split(",")) {
        const [from, to] = range.split("-").map(Number);
        if (from === undefined || !Number.isInteger(from)) return null;
        const end = to === undefined ? from : to;
        if (!Number.isInteger(end) || end < from) return null;
        count += end - from + 1;
    }
    return count;
}

async function readCpuQuota(root: string, cgroups: CgroupMembership): Promise<number | null> {
    let quota: number | null = null;
    const v1Path = cgroups.v1.get("cpu");
    if (v1Path !== undefined) {
        for (const mount of ["sys/fs/cgroup/cpu", "sys/fs/cgroup/cpu,cpuacct", "sys/fs/cgroup/cpuacct,cpu"]) {
            if (await readText(root, `${mount}/cpu.cfs_period_us`) === null) continue;
            for (const level of (await cgroupDir(root, mount, v1Path)).levels) {
                const q = await readLimit(root, `${level}/cpu.cfs_quota_us`);
                const period = await readNumber(root, `${level}/cpu.cfs_period_us`);
                if (q !== null && period !== null && period > 0) quota = minOf(quota, q / period);
            }
            return quota;
        }
    }
    for (const mount of ["sys/fs/cgroup", "sys/fs/cgroup/unified"]) {
        if (await readText(root, `${mount}/cgroup.controllers`) === null) continue;
        for (const level of (await cgroupDir(root, mount, cgroups.unifiedPath ?? "/")).levels) {
            const [max, period] = (await readText(root, `${level}/cpu.max`))?.trim().split(/\s+/) ?? [];
            const q = max === undefined || max === "max" ? NaN : Number(max);
            const p = Number(period ?? 100000);
            if (Number.isFinite(q) && q > 0 && p > 0) quota = minOf(quota, q / p);
        }
        return quota;
    }
    return quota;
}

/** ARM cores have no "model name" in /proc/cpuinfo; these parts cover the Raspberry Pi line. */
const ARM_PARTS: Record<string, string> = {
    "0xd03": "ARM Cortex-A53", "0xd04": "ARM Cortex-A35", "0xd05": "ARM Cortex-A55", "0xd07": "ARM Cortex-A57",
    "0xd08": "ARM Cortex-A72", "0xd09": "ARM Cortex-A73", "0xd0a": "ARM Cortex-A75", "0xd0b": "ARM Cortex-A76",
    "0xd0c": "ARM Neoverse-N1", "0xd40": "ARM Neoverse-V1", "0xd49": "ARM Neoverse-N2"
};

function cpuModel(cpuinfo: string | null): string | null {
    const fields = parseKeyValues(cpuinfo, /\s*:\s*/);
    const name = fields.get("model name");
    if (name) return name;
    const part = fields.get("CPU part")?.toLowerCase();
    return part !== undefined ? ARM_PARTS[part] ?? `ARM part ${part}` : null;
}

// ---- board ----

/** What firmware writes into DMI fields nobody filled in: not a model name. */
const DMI_PLACEHOLDER = /^(to be filled by o\.?e\.?m\.?|system (product name|manufacturer)|default string|not (specified|applicable)|none|unknown|0+|x+|\.+)$/i;

async function probeBoard(root: string, live: boolean, cpuinfo: string | null): Promise<BoardFacts> {
    const read = async (path: string): Promise<string | null> => {
        const text = (await readText(root, path))?.replace(/\0+$/, "").trim();
        return text && !DMI_PLACEHOLDER.test(text) ? text : null;
    };
    let model: string | null = null;
    let vendor: string | null = null;
    for (const path of ["proc/device-tree/model", "sys/firmware/devicetree/base/model"]) {
        model ??= await read(path);
    }
    if (model === null) {
        model = await read("sys/class/dmi/id/product_name");
        if (model !== null) vendor = await read("sys/class/dmi/id/sys_vendor");
    }
    const isRaspberryPi = model !== null && /^Raspberry Pi\b/.test(model);
    if (isRaspberryPi) vendor = "Raspberry Pi Ltd";
    return {arch: live ? process.arch : archFromCpuinfo(cpuinfo), simd: simdFromCpuinfo(cpuinfo), model, vendor, isRaspberryPi};
}

/** The SIMD features that decide llama.cpp's weight repacking (src/models/repack.ts), from cpuinfo's flags/Features. */
export function simdFromCpuinfo(cpuinfo: string | null): string[] {
    const line = cpuinfo?.split("\n").find((l) => /^(flags|Features)\s*:/.test(l));
    if (!line) return [];
    const words = new Set(line.slice(line.indexOf(":") + 1).trim().split(/\s+/));
    return ["avx2", "avx512f", "amx_int8", "asimddp", "i8mm", "sve"].filter((f) => words.has(f));
}

/** A recorded tree does not say which Node arch it came from; its cpuinfo does. */
function archFromCpuinfo(cpuinfo: string | null): string {
    const fields = parseKeyValues(cpuinfo, /\s*:\s*/);
    const armArch = fields.get("CPU architecture");
    if (armArch !== undefined) return Number(armArch) >= 8 ? "arm64" : "arm";
    const flags = fields.get("flags");
    if (flags !== undefined) return /\blm\b/.test(flags) ? "x64" : "ia32";
    return "unknown";
}
