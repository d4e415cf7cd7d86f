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
