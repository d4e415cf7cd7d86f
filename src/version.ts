import {readFileSync} from "node:fs";

interface PackageJson {name?: string; version?: string; homepage?: string}

/** Our package.json (two levels up from dist/src), or null. */
function ownPackage(): PackageJson | null {
    for (const rel of ["../../package.json", "../package.json"]) {
        try {
            const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as PackageJson;
            if (pkg.name === "qwen-edge") return pkg;
        } catch {
            // try the next candidate
        }
    }
    return null;
}

/** The version in package.json. */
export function packageVersion(): string {
    return ownPackage()?.version ?? "unknown";
}

/** The project's URL (package.json `homepage`, an http(s) URL), or null when none is set. */
export function packageHomepage(): string | null {
    const url = ownPackage()?.homepage;
    return typeof url === "string" && /^https?:\/\/\S+$/.test(url) ? url : null;
}

export function nodeLlamaCppVersion(): string {
    try {
        const url = new URL("../../node_modules/node-llama-cpp/package.json", import.meta.url);
        return (JSON.parse(readFileSync(url, "utf8")) as {version: string}).version;
    } catch {
        return "unknown";
    }
}
