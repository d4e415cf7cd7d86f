import {readFileSync} from "node:fs";

/** The version in package.json (two levels up from dist/src). */
export function packageVersion(): string {
    for (const rel of ["../../package.json", "../package.json"]) {
        try {
            const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as {name?: string; version?: string};
            if (pkg.name === "qwen-edge" && pkg.version) return pkg.version;
        } catch {
            // try the next candidate
        }
    }
    return "unknown";
}

export function nodeLlamaCppVersion(): string {
    try {
        const url = new URL("../../node_modules/node-llama-cpp/package.json", import.meta.url);
        return (JSON.parse(readFileSync(url, "utf8")) as {version: string}).version;
    } catch {
        return "unknown";
    }
}
