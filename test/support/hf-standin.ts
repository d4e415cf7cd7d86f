/**
 * A local stand-in for the Hugging Face endpoints the daemon uses (no internet here): the paths-info
 * API (sha256 of LFS files) and `resolve/main/<file>` with Range support and `x-linked-etag`, as the
 * Hub answers. `beforeBody` runs before a ranged body is sent (header reads by the planner too), so a
 * test can act at the moment a download really starts (e.g. fill the disk).
 */
import {createHash} from "node:crypto";
import http from "node:http";

export interface HfStandIn {
    endpoint: string;
    /** "METHOD path range" of every request */
    requests: string[];
    close(): Promise<void>;
}

export interface HfFile {
    /** "owner/repo" */
    repo: string;
    file: string;
    data: Buffer;
}

export interface HfStandInOptions {
    beforeBody?: (file: HfFile, start: number, length: number) => Promise<void>;
    /**
     * Send bodies in pieces of `chunkBytes` every `intervalMs` (a slow link) instead of at once; with
     * `when`, only for requests whose Range header ("" when none) it accepts.
     */
    throttle?: {chunkBytes: number; intervalMs: number; when?: (range: string, size: number) => boolean};
}

export async function startHfStandIn(files: HfFile[], options: HfStandInOptions = {}): Promise<HfStandIn> {
    const requests: string[] = [];
    const sha = new Map(files.map((f) => [f, createHash("sha256").update(f.data).digest("hex")]));
    const server = http.createServer((req, res) => {
        const path = new URL(req.url ?? "/", "http://x").pathname;
        requests.push(`${req.method} ${path} ${req.headers.range ?? ""}`);
        const info = /^\/api\/models\/([^/]+\/[^/]+)\/paths-info\/[^/]+$/.exec(path);
        if (req.method === "POST" && info) {
            const entries = files.filter((f) => f.repo === info[1]).map((f) => ({type: "file", path: f.file, size: f.data.length,
                oid: "0".repeat(40), lfs: {oid: sha.get(f), size: f.data.length, pointerSize: 134}}));
            res.writeHead(200, {"content-type": "application/json"}).end(JSON.stringify(entries));
            return;
        }
        const file = files.find((f) => path === `/${f.repo}/resolve/main/${f.file}`);
        if (!file) {
            res.writeHead(404).end();
            return;
        }
        const size = file.data.length;
        const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? "");
        const start = m ? Number(m[1]) : 0;
        const end = m?.[2] ? Math.min(Number(m[2]), size - 1) : size - 1;
        const headers = {"content-length": end - start + 1, "accept-ranges": "bytes", "x-linked-etag": `"${sha.get(file)}"`,
            ...(m ? {"content-range": `bytes ${start}-${end}/${size}`} : {})};
        const body = file.data.subarray(start, end + 1);
        const send = (): void => {
            res.writeHead(m ? 206 : 200, headers);
            if (req.method === "HEAD") res.end();
            else if (!options.throttle || body.length <= 1 || options.throttle.when?.(req.headers.range ?? "", size) === false) res.end(body);
            else {
                const {chunkBytes, intervalMs} = options.throttle;
                let at = 0;
                const next = (): void => {
                    if (res.destroyed) return;
                    const piece = body.subarray(at, at + chunkBytes);
                    at += piece.length;
                    if (at >= body.length) res.end(piece);
                    else {
                        res.write(piece);
                        setTimeout(next, intervalMs);
                    }
                };
                next();
            }
        };
        // not for 1-byte size probes
        if (req.method === "GET" && body.length > 1 && options.beforeBody) {
            options.beforeBody(file, start, body.length).then(send, () => res.destroy());
        } else {
            send();
        }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as {port: number}).port;
    return {
        endpoint: `http://127.0.0.1:${port}/`,
        requests,
        close: async () => {
            server.closeAllConnections();
            await new Promise<void>((resolve) => server.close(() => resolve()));
        }
    };
}
