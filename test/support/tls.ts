/**
 * Test certificates made with openssl at test time (EC P-256: a fraction of a second for all):
 * a CA; a broker certificate for 127.0.0.1 signed by it; the same key with a certificate that
 * expired in 2020; a client certificate for mutual TLS; and an unrelated "wrong" CA.
 */
import {execFile} from "node:child_process";
import {mkdir, writeFile} from "node:fs/promises";
import {join} from "node:path";
import {promisify} from "node:util";

const run = promisify(execFile);

export interface TestPki {
    dir: string;
    ca: string;
    wrongCa: string;
    serverCert: string;
    serverKey: string;
    expiredServerCert: string;
    clientCert: string;
    clientKey: string;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

export async function makeTestPki(dir: string): Promise<TestPki> {
    const p = (name: string): string => join(dir, name);
    const openssl = async (...args: string[]): Promise<void> => {
        await run("openssl", args, {cwd: dir});
    };
    await openssl("req", "-x509", ...EC, "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2", "-subj", "/CN=qwen-edge test CA");
    await openssl("req", "-x509", ...EC, "-keyout", p("wrong-ca.key"), "-out", p("wrong-ca.crt"), "-days", "2", "-subj", "/CN=some other CA");
    await openssl("req", ...EC, "-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost");
    await writeFile(p("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    await openssl("x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
        "-days", "2", "-extfile", p("san.ext"), "-out", p("server.crt"));
    await openssl("req", ...EC, "-keyout", p("client.key"), "-out", p("client.csr"), "-subj", "/CN=qwen-edge-client");
    await openssl("x509", "-req", "-in", p("client.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"), "-CAcreateserial",
        "-days", "2", "-out", p("client.crt"));
    // OpenSSL 3.0's `x509 -req` cannot backdate; `openssl ca` can (-startdate/-enddate).
    await mkdir(p("ca-db"), {recursive: true});
    await writeFile(p("ca-db/index.txt"), "");
    await writeFile(p("ca-db/serial"), "1000\n");
    await writeFile(p("ca.cnf"), [
        "[ca]", "default_ca = test_ca", "[test_ca]", `database = ${p("ca-db/index.txt")}`, `new_certs_dir = ${p("ca-db")}`,
        `serial = ${p("ca-db/serial")}`, "default_md = sha256", "policy = any", "copy_extensions = copy", "unique_subject = no",
        "[any]", "commonName = supplied", ""
    ].join("\n"));
    await openssl("ca", "-batch", "-config", p("ca.cnf"), "-cert", p("ca.crt"), "-keyfile", p("ca.key"), "-notext",
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-in", p("server.csr"), "-out", p("expired.crt"));
    return {
        dir, ca: p("ca.crt"), wrongCa: p("wrong-ca.crt"), serverCert: p("server.crt"), serverKey: p("server.key"),
        expiredServerCert: p("expired.crt"), clientCert: p("client.crt"), clientKey: p("client.key")
    };
}

/** A Mosquitto password file made by mosquitto_passwd (hashed, as a real deployment has it). */
export async function makePasswordFile(path: string, users: Record<string, string>): Promise<void> {
    await writeFile(path, "");
    for (const [user, password] of Object.entries(users)) await run("mosquitto_passwd", ["-b", path, user, password]);
}
