/**
 * Raspberry Pi throttling: the firmware's get_throttled word, decoded into named flags "now" and
 * "since boot". Read from sysfs when the kernel exposes it (a plain file read); else from
 * `vcgencmd get_throttled`, which means spawning a process: on this project's machines the spawn
 * blocked the event loop for 5 ms (small process) to 25-50 ms (600 MB resident), so the command is
 * run at most every `commandIntervalMs` and its answer reused in between.
 */
import {execFile} from "node:child_process";
import {access} from "node:fs/promises";
import {join} from "node:path";
import {readTextSync} from "./probe.js";

export interface ThrottleFlags {
    /** bit 0 / 16: under-voltage (the supply sagged below the firmware's limit) */
    underVoltage: boolean;
    /** bit 1 / 17: ARM frequency capped */
    frequencyCapped: boolean;
    /** bit 2 / 18: currently throttled */
    throttled: boolean;
    /** bit 3 / 19: soft temperature limit active */
    softTemperatureLimit: boolean;
    /** any of the above */
    any: boolean;
}

export interface ThrottleState {
    /** the raw word as hex, e.g. "0x50005" */
    raw: string;
    now: ThrottleFlags;
    sinceBoot: ThrottleFlags;
    source: "sysfs" | "vcgencmd";
}

/** The sysfs attribute of the Raspberry Pi firmware driver (hex digits without "0x"). */
export const THROTTLE_SYSFS_PATH = "sys/devices/platform/soc/soc:firmware/get_throttled";
const VCGENCMD_CANDIDATES = ["/usr/bin/vcgencmd", "/opt/vc/bin/vcgencmd"];

function flags(word: number, shift: number): ThrottleFlags {
    const bit = (n: number): boolean => ((word >>> (n + shift)) & 1) === 1;
    const f = {underVoltage: bit(0), frequencyCapped: bit(1), throttled: bit(2), softTemperatureLimit: bit(3)};
    return {...f, any: f.underVoltage || f.frequencyCapped || f.throttled || f.softTemperatureLimit};
}

export function decodeThrottled(word: number, source: ThrottleState["source"]): ThrottleState {
    return {raw: `0x${word.toString(16)}`, now: flags(word, 0), sinceBoot: flags(word, 16), source};
}

/** "throttled=0x50005" (vcgencmd) or "50005" (sysfs) -> 0x50005; null for anything else. */
export function parseThrottled(text: string): number | null {
    const match = /^(?:throttled=)?(?:0x)?([0-9a-f]{1,8})$/i.exec(text.trim());
    if (!match?.[1]) return null;
    return Number.parseInt(match[1], 16);
}

/** Names of the raised flags, e.g. ["under-voltage", "throttled"], for status reasons and logs. */
export function describeFlags(f: ThrottleFlags): string[] {
    const names: string[] = [];
    if (f.underVoltage) names.push("under-voltage");
    if (f.frequencyCapped) names.push("frequency capped");
    if (f.throttled) names.push("throttled");
    if (f.softTemperatureLimit) names.push("soft temperature limit");
    return names;
}

export interface ThrottleReaderOptions {
    /** root of the /sys tree; default "/" */
    root?: string;
    /** runs `vcgencmd get_throttled` and resolves its output; default: spawn the binary if installed */
    runVcgencmd?: () => Promise<string>;
    /** the command runs at most this often; default 300 000 ms */
    commandIntervalMs?: number;
}

export class ThrottleReader {
    private readonly options: ThrottleReaderOptions;
    private source: ThrottleState["source"] | null | undefined = undefined;
    private vcgencmd: (() => Promise<string>) | null = null;
    private cached: {at: number; state: ThrottleState | null} | null = null;
    private inFlight: Promise<ThrottleState | null> | null = null;

    public constructor(options: ThrottleReaderOptions = {}) {
        this.options = options;
    }

    /** Finds a source once: sysfs, else vcgencmd, else none (not a Raspberry Pi). */
    public async detect(): Promise<ThrottleState["source"] | null> {
        if (this.source !== undefined) return this.source;
        const root = this.options.root ?? "/";
        if (await access(join(root, THROTTLE_SYSFS_PATH)).then(() => true, () => false)) {
            this.source = "sysfs";
        } else if (this.options.runVcgencmd) {
            this.vcgencmd = this.options.runVcgencmd;
            this.source = "vcgencmd";
        } else {
            const binary = await firstExisting(VCGENCMD_CANDIDATES);
            this.vcgencmd = binary === null ? null : () => runCommand(binary, ["get_throttled"], 2000);
            this.source = binary === null ? null : "vcgencmd";
        }
        return this.source;
    }

    /** The current word, or null when there is no source or it cannot be read. Never rejects. */
    public async read(): Promise<ThrottleState | null> {
        const source = await this.detect();
        if (source === null) return null;
        if (source === "sysfs") {
            const text = readTextSync(this.options.root ?? "/", THROTTLE_SYSFS_PATH);
            const word = text === null ? null : parseThrottled(text);
            return word === null ? null : decodeThrottled(word, "sysfs");
        }
        const interval = this.options.commandIntervalMs ?? 300_000;
        if (this.cached && Date.now() - this.cached.at < interval) return this.cached.state;
        this.inFlight ??= (async () => {
            const output = await this.vcgencmd!().catch(() => null);
            const word = output === null ? null : parseThrottled(output);
            const state = word === null ? null : decodeThrottled(word, "vcgencmd");
            this.cached = {at: Date.now(), state};
            return state;
        })().finally(() => {
            this.inFlight = null;
        });
        return this.inFlight;
    }
}

async function firstExisting(paths: string[]): Promise<string | null> {
    for (const path of paths) if (await access(path).then(() => true, () => false)) return path;
    return null;
}

function runCommand(file: string, args: string[], timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
        execFile(file, args, {timeout: timeoutMs, encoding: "utf8"}, (err, stdout) => {
            if (err) reject(err instanceof Error ? err : new Error(`${file} failed`));
            else resolve(stdout);
        });
    });
}
