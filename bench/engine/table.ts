/** The results table: native vs each node-llama-cpp mode, tokens/s and ratio, and TTFT. */
import type {NodeMode, NodeResult} from "./child.js";
import type {NativeResult} from "./native.js";

export interface Row {
    model: string;
    modelBytes: number;
    threads: number;
    native: NativeResult | null;
    node: Partial<Record<NodeMode, NodeResult | {error: string}>>;
}

function cell(r: NodeResult | {error: string} | undefined, nativeTps: number | null): string {
    if (!r) return "-";
    if ("error" in r) return r.error.startsWith("timed out") ? "timeout" : "error";
    const ratio = nativeTps ? ` (${(r.genTps / nativeTps).toFixed(2)})` : "";
    return `${r.genTps.toFixed(0)}${ratio}`;
}

/** Markdown, so the same text goes into docs/ENGINE-SPEED.md. */
export function formatTable(rows: Row[], modes: readonly NodeMode[]): string {
    const head = ["model", "threads", "native tok/s", "native TTFT ms", ...modes.map((m) => `${m} tok/s (ratio)`), "engine TTFT ms", "binary"];
    const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
    for (const row of rows) {
        const nat = row.native;
        const engine = row.node.engine;
        const any = Object.values(row.node).find((r): r is NodeResult => r !== undefined && !("error" in r));
        lines.push(`| ${[
            `${row.model} (${(row.modelBytes / 1e6).toFixed(0)} MB)`, String(row.threads),
            nat ? nat.genTps.toFixed(0) : "-", nat ? nat.ttftMs.toFixed(1) : "-",
            ...modes.map((m) => cell(row.node[m], nat?.genTps ?? null)),
            engine && !("error" in engine) ? engine.ttftMs.toFixed(1) : "-",
            any?.buildType ?? "-"
        ].join(" | ")} |`);
    }
    return lines.join("\n");
}

/**
 * Where a generated token's time goes, in ms per token: native llama-bench's whole token (a loop of
 * llama_decode), and per node mode its whole token, the part inside llama_decode (decode timer),
 * the part outside it (JavaScript, the addon, thread handoffs), and the time threads sat runnable
 * without a CPU (schedstat). "-" where the decode timer or /proc was not available.
 */
export function formatSplitTable(rows: Row[], modes: readonly NodeMode[]): string {
    const head = ["model", "threads", "native ms/token", ...modes.map((m) => `${m}: token = in decode + outside (run-queue wait)`), "libuv pool"];
    const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
    const ms = (x: number): string => x.toFixed(2);
    for (const row of rows) {
        const nat = row.native;
        let pool = "-";
        const cells = modes.map((m) => {
            const r = row.node[m];
            if (!r || "error" in r) return "-";
            const token = 1000 / r.genTps;
            const inDecode = r.decodeTimer ? r.decodeTimer.wallUs.mean / 1000 : null;
            const wait = r.perToken ? ` (${ms(r.perToken.runQueueWaitMs)})` : "";
            if (r.uvPool !== undefined) pool = String(r.uvPool);
            return inDecode === null ? `${ms(token)}${wait}` : `${ms(token)} = ${ms(inDecode)} + ${ms(Math.max(0, token - inDecode))}${wait}`;
        });
        lines.push(`| ${[`${row.model} (${(row.modelBytes / 1e6).toFixed(0)} MB)`, String(row.threads), nat ? ms(1000 / nat.genTps) : "-",
            ...cells, pool].join(" | ")} |`);
    }
    return lines.join("\n");
}
