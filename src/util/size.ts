/** Sizes as people write them in configuration and on the command line, and as we print them. */
import {ConfigError} from "../errors.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const UNITS: Record<string, number> = {
    "": 1, b: 1,
    kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12,
    kib: 1024, mib: MiB, gib: GiB, tib: 1024 * GiB,
    // Bare K/M/G/T are binary, as in systemd's MemoryMax= and docker --memory.
    k: 1024, m: MiB, g: GiB, t: 1024 * GiB
};

/** "4GiB", "1536MiB", "1.5GB", "4G", "123456" -> bytes. Throws ConfigError for anything else. */
export function parseSize(text: string): number {
    const match = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)\s*$/i.exec(text);
    const factor = match ? UNITS[(match[2] ?? "").toLowerCase()] : undefined;
    if (!match || factor === undefined) {
        throw new ConfigError(`Invalid size "${text}": expected bytes or a number with a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; K, M, G, T mean KiB...TiB), e.g. "4GiB", "1536MiB", "1.5GB", "123456"`);
    }
    const bytes = Math.round(Number(match[1]) * factor);
    if (!Number.isSafeInteger(bytes)) throw new ConfigError(`Invalid size "${text}": too large`);
    return bytes;
}

/** 1536 MiB -> "1.5 GiB"; binary units, three significant digits. */
export function formatBytes(bytes: number): string {
    const sign = bytes < 0 ? "-" : "";
    let value = Math.abs(bytes);
    if (value < 1024) return `${sign}${Math.round(value)} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let unit = -1;
    while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit++;
    }
    return `${sign}${Number(value.toPrecision(3))} ${units[unit]}`;
}
