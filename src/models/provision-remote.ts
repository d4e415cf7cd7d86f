// What provisioning asks the network before a download: is the file there, how big is it, and what is its
// sha256 (the Hugging Face API knows it for LFS/Xet files). No request here is retried; the caller retries.
import {ModelUnavailableError} from "../errors.js";
import {redactUrl} from "../util/url.js";

export interface HfRef {owner: string; repo: string; filePath: string; revision: string}

const PROBE_TIMEOUT_MS = 30_000;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** A definite answer from a server; 4xx other than 408/429 will not change by retrying. */
export class RemoteStatusError extends Error {
    public readonly permanent: boolean;
    public constructor(public readonly status: number, url: string) {
        super(`HTTP ${status} from ${redactUrl(url)}`);
        this.permanent = status >= 400 && status < 500 && status !== 408 && status !== 429;
    }
}

export function hfEndpoint(configured?: string): string {
    const e = configured ?? process.env.HF_ENDPOINT ?? "https://huggingface.co/";
    return e.endsWith("/") ? e : `${e}/`;
}

/** `hf:owner/repo/path/File.gguf#revision` -> its parts; null for other URIs. */
export function parseHfUri(uri: string): HfRef | null {
    if (!uri.startsWith("hf:")) return null;
    let rest = uri.slice("hf:".length).replace(/^\/\//, "");
    let revision = "main";
    const hash = rest.indexOf("#");
    if (hash >= 0) {
        revision = rest.slice(hash + 1) || "main";
        rest = rest.slice(0, hash);
    }
    const [owner, repo, ...file] = rest.split("/");
    if (owner === undefined || owner === "" || repo === undefined || repo === "" || file.length === 0 || file.join("") === "")
        throw new ModelUnavailableError(`model URI ${uri} must name one file: hf:owner/repo/File.gguf`);
    return {owner, repo, filePath: file.join("/"), revision};
}

/** The plain https URL a person can fetch by hand (and that we probe). */
export function resolveDownloadUrl(uri: string, endpoint: string): string {
    const hf = parseHfUri(uri);
    if (hf === null) return uri;
    const e = encodeURIComponent;
    return `${endpoint}${e(hf.owner)}/${e(hf.repo)}/resolve/${e(hf.revision)}/${hf.filePath.split("/").map(e).join("/")}`;
}

function sameHost(url: string, endpoint: string): boolean {
    try {
        return new URL(url).host === new URL(endpoint).host;
    } catch {
        return false;
    }
}

function withTimeout(signal: AbortSignal | undefined, ms: number): AbortSignal {
    const timeout = AbortSignal.timeout(ms);
    return signal === undefined ? timeout : AbortSignal.any([signal, timeout]);
}

/**
 * GET bytes=0-0 with redirects followed by hand, so that Hugging Face's `X-Linked-Etag` (the sha256) on the
 * redirect can be read and the token is never sent to another host (the CDN).
 */
export async function probeRemote(url: string, authHeaders: Record<string, string> | undefined, endpoint: string,
    signal?: AbortSignal): Promise<{totalBytes: number | null; linkedSha256: string | null}> {
    let current = url;
    let linkedSha256: string | null = null;
    for (let hop = 0; hop < 6; hop++) {
        const res = await fetch(current, {
            redirect: "manual",
            headers: {range: "bytes=0-0", "accept-encoding": "identity", ...(sameHost(current, endpoint) ? authHeaders : {})},
            signal: withTimeout(signal, PROBE_TIMEOUT_MS)
        });
        await res.body?.cancel();
        const etag = res.headers.get("x-linked-etag")?.replace(/^(W\/)?"|"$/g, "").toLowerCase();
        if (etag !== undefined && SHA256_HEX.test(etag)) linkedSha256 = etag;
        const location = res.headers.get("location");
        if (res.status >= 300 && res.status < 400 && location !== null) {
            current = new URL(location, current).href;
            continue;
        }
        if (res.status === 206) {
            const m = /\/(\d+)\s*$/.exec(res.headers.get("content-range") ?? "");
            return {totalBytes: m?.[1] !== undefined ? Number(m[1]) : null, linkedSha256};
        }
        if (res.status === 200) {
            const n = Number(res.headers.get("content-length"));
            return {totalBytes: Number.isFinite(n) && n > 0 ? n : null, linkedSha256};
        }
        throw new RemoteStatusError(res.status, current);
    }
    throw new Error(`too many redirects from ${redactUrl(url)}`);
}

/** sha256 and size of one file from the Hub's paths-info API; null fields when the file is not in LFS/Xet. */
export async function hfFileInfo(endpoint: string, hf: HfRef, authHeaders: Record<string, string> | undefined,
    signal?: AbortSignal): Promise<{sha256: string | null; sizeBytes: number | null}> {
    const e = encodeURIComponent;
    const url = `${endpoint}api/models/${e(hf.owner)}/${e(hf.repo)}/paths-info/${e(hf.revision)}`;
    const res = await fetch(url, {
        method: "POST",
        headers: {"content-type": "application/json", accept: "application/json", ...authHeaders},
        body: JSON.stringify({paths: [hf.filePath]}),
        signal: withTimeout(signal, PROBE_TIMEOUT_MS)
    });
    if (!res.ok) {
        await res.body?.cancel();
        throw new RemoteStatusError(res.status, url);
    }
    const entries = (await res.json()) as Array<{path?: unknown; size?: unknown; lfs?: {oid?: unknown; size?: unknown}}>;
    const entry = Array.isArray(entries) ? entries.find((x) => x.path === hf.filePath) : undefined;
    if (entry === undefined) throw new Error(`the Hugging Face API does not list ${hf.filePath}`);
    const oid = typeof entry.lfs?.oid === "string" ? entry.lfs.oid.toLowerCase() : null;
    const size = typeof entry.lfs?.size === "number" ? entry.lfs.size : typeof entry.size === "number" ? entry.size : null;
    return {sha256: oid !== null && SHA256_HEX.test(oid) ? oid : null, sizeBytes: size};
}
