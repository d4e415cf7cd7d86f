/**
 * Broker secrets: the password comes from a file or the systemd credential only; every way of
 * passing it directly is refused with directions; connect errors read as one actionable sentence.
 */
import assert from "node:assert/strict";
import {chmod, mkdir, mkdtemp, rm, writeFile} from "node:fs/promises";
import {tmpdir} from "node:os";
import {join} from "node:path";
import {after, before, describe, it} from "node:test";
import {splitArgs} from "../../src/cli/args.js";
import {loadConfig} from "../../src/config.js";
import {ConfigError} from "../../src/errors.js";
import {readBrokerSecrets} from "../../src/mqtt/credentials.js";
import {explainConnectError} from "../../src/mqtt/link.js";
import {watchdogIntervalMs} from "../../src/system/sdnotify.js";

const none = {passwordFile: "", ca: "", cert: "", key: ""};

describe("readBrokerSecrets", () => {
    let dir: string;
    before(async () => {
        dir = await mkdtemp(join(tmpdir(), "qe-secrets-"));
    });
    after(async () => {
        await rm(dir, {recursive: true, force: true});
    });

    it("reads mqtt.passwordFile without its trailing newline, and warns when others can read it", async () => {
        const file = join(dir, "pw");
        await writeFile(file, "s3cret\n", {mode: 0o644});
        await chmod(file, 0o644);
        const secrets = readBrokerSecrets({...none, passwordFile: file}, {});
        assert.equal(secrets.password?.toString(), "s3cret");
        assert.equal(secrets.passwordSource, "passwordFile");
        assert.match(secrets.warnings.join(), /can be read by other users \(mode 644\): chmod 600/);
        await chmod(file, 0o600);
        assert.deepEqual(readBrokerSecrets({...none, passwordFile: file}, {}).warnings, []);
    });

    it("falls back to $CREDENTIALS_DIRECTORY/mqtt-password; absent or empty (the unit's fallback) means no password", async () => {
        const creds = join(dir, "creds");
        await mkdir(creds);
        assert.equal(readBrokerSecrets(none, {CREDENTIALS_DIRECTORY: creds}).passwordSource, "none");
        await writeFile(join(creds, "mqtt-password"), "\n");
        assert.equal(readBrokerSecrets(none, {CREDENTIALS_DIRECTORY: creds}).password, undefined, "SetCredential=mqtt-password:\\n");
        await writeFile(join(creds, "mqtt-password"), "from-systemd");
        const secrets = readBrokerSecrets(none, {CREDENTIALS_DIRECTORY: creds});
        assert.equal(secrets.password?.toString(), "from-systemd");
        assert.equal(secrets.passwordSource, "systemd-credential");
    });

    it("names the key of a configured file it cannot read", () => {
        assert.throws(() => readBrokerSecrets({...none, ca: join(dir, "missing-ca.pem")}, {}),
            (err: Error) => err instanceof ConfigError && /^mqtt\.ca: cannot read .*missing-ca\.pem: ENOENT$/.test(err.message));
        assert.throws(() => readBrokerSecrets({...none, passwordFile: join(dir, "nope")}, {}), /ConfigError: mqtt\.passwordFile: cannot read/);
    });
});

describe("a password given directly is refused, pointing to mqtt.passwordFile", () => {
    const refused = (err: unknown): boolean =>
        err instanceof ConfigError && /never taken from the command line or the environment/.test(err.message) && /mqtt\.passwordFile/.test(err.message);

    it("--mqtt-password and --mqtt-password=…", () => {
        assert.throws(() => splitArgs(["--mqtt-password", "x"]), refused);
        assert.throws(() => splitArgs(["--mqtt-password=x"]), (err: Error) => refused(err) && !err.message.includes("=x"));
    });

    it("QWEN_EDGE_MQTT_PASSWORD", () => {
        assert.throws(() => loadConfig({env: {QWEN_EDGE_MQTT_PASSWORD: "x"}}), refused);
    });

    it("mqtt.password in the configuration file", async () => {
        const dir = await mkdtemp(join(tmpdir(), "qe-pwfile-"));
        try {
            const file = join(dir, "c.yaml");
            await writeFile(file, "mqtt:\n  password: x\n");
            assert.throws(() => loadConfig({args: ["--config", file], env: {}}), /ConfigError: mqtt\.password in .*: the configuration file is no place for a password.*mqtt\.passwordFile/s);
        } finally {
            await rm(dir, {recursive: true, force: true});
        }
    });

    it("--mqtt-password-file is an ordinary option", () => {
        assert.deepEqual(splitArgs(["--mqtt-password-file", "/etc/pw"]).config, ["--mqtt-password-file", "/etc/pw"]);
    });
});

describe("explainConnectError", () => {
    const url = "mqtts://broker.lan:8883";
    const err = (code: string | number, message = "x"): Error & {code: string | number} => Object.assign(new Error(message), {code});
    const cases: Array<{code: string | number; message?: string; ca?: boolean; cert?: boolean; expect: string; text: RegExp}> = [
        {code: "ECONNREFUSED", expect: "broker_unreachable", text: /no MQTT broker is listening at mqtts:\/\/broker\.lan:8883: install one \(sudo apt-get install mosquitto\)/},
        {code: "ENOTFOUND", expect: "broker_unreachable", text: /cannot resolve the broker host/},
        {code: "ECONNRESET", expect: "broker_unreachable", text: /speaks TLS and mqtt\.url says mqtt:\/\//},
        {code: 134, message: "Connection refused: Bad User Name or Password", expect: "broker_auth", text: /\(CONNACK 134, Bad User Name or Password\): wrong username or password; check mqtt\.username and the password \(mqtt\.passwordFile, or the systemd credential mqtt-password\)/},
        {code: 135, message: "Connection refused: Not authorized", expect: "broker_auth", text: /\(CONNACK 135, Not authorized\): not authorized/},
        {code: 5, message: "Connection refused: Not authorized", expect: "broker_auth", text: /CONNACK 5/},
        {code: 136, message: "Connection refused: Server unavailable", expect: "broker_unreachable", text: /refused the connection \(CONNACK 136, Server unavailable\)$/},
        {code: "SELF_SIGNED_CERT_IN_CHAIN", ca: true, expect: "broker_tls", text: /not signed by the CA in mqtt\.ca/},
        {code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE", ca: false, expect: "broker_tls", text: /not signed by a trusted CA .*set mqtt\.ca to a PEM file of/},
        {code: "CERT_HAS_EXPIRED", expect: "broker_tls", text: /has expired \(CERT_HAS_EXPIRED\): renew it on the broker/},
        {code: "CERT_NOT_YET_VALID", expect: "broker_tls", text: /check this device's clock/},
        {code: "ERR_TLS_CERT_ALTNAME_INVALID", expect: "broker_tls", text: /does not name the host in mqtt\.url/},
        {code: "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED", message: "805C71C7BA7F0000:error:0A00045C:SSL routines:ssl3_read_bytes:...", expect: "broker_tls", text: /requires a client certificate \(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED\): set mqtt\.cert and mqtt\.key$/},
        {code: "ERR_SSL_TLSV1_ALERT_UNKNOWN_CA", cert: true, expect: "broker_tls", text: /rejected our client certificate/}
    ];
    for (const c of cases) {
        it(`${c.code} -> ${c.expect}`, () => {
            const e = explainConnectError(err(c.code, c.message), url, {ca: c.ca ?? true, clientCert: c.cert ?? false});
            assert.equal(e.code, c.expect);
            assert.match(e.message, c.text);
            assert.ok(!e.message.includes("ssl3_read_bytes"), "no OpenSSL internals");
        });
    }

    it("never prints credentials embedded in the URL", () => {
        const e = explainConnectError(err("ECONNREFUSED"), "mqtt://user:hunter2@host:1883");
        assert.ok(!e.message.includes("hunter2") && !e.message.includes("user@"), e.message);
    });
});

describe("watchdogIntervalMs (sd_watchdog_enabled)", () => {
    const cases: Array<[NodeJS.ProcessEnv, number]> = [
        [{}, 0],
        [{WATCHDOG_USEC: "120000000"}, 60_000],
        [{WATCHDOG_USEC: "120000000", WATCHDOG_PID: "4242"}, 60_000],
        [{WATCHDOG_USEC: "120000000", WATCHDOG_PID: "1"}, 0],
        [{WATCHDOG_USEC: "nonsense"}, 0],
        [{WATCHDOG_USEC: "0"}, 0]
    ];
    for (const [env, expected] of cases) {
        it(`${JSON.stringify(env)} -> ${expected} ms`, () => assert.equal(watchdogIntervalMs(env, 4242), expected));
    }
});
