/**
 * Broker secrets and TLS material, read from files only. The password never comes from the command
 * line or the environment (other local users can read /proc/PID/cmdline, and environments leak into
 * child processes and crash reports): it is read from mqtt.passwordFile or, under systemd, from the
 * credential `mqtt-password` (LoadCredential= copies it to $CREDENTIALS_DIRECTORY, readable by this
 * service only). Certificate verification has no off switch: there is deliberately no option here.
 */
import {readFileSync, statSync} from "node:fs";
import {join} from "node:path";
import {ConfigError} from "../errors.js";

/** The systemd credential id the unit file loads the password into. */
export const PASSWORD_CREDENTIAL = "mqtt-password";

export interface BrokerSecretsConfig {
    passwordFile: string;
    ca: string;
    cert: string;
    key: string;
}

/** The password and TLS material, each present only when configured. */
export interface BrokerFiles {
    password?: Buffer;
    ca?: Buffer;
    cert?: Buffer;
    key?: Buffer;
}

export interface BrokerSecrets extends BrokerFiles {
    /** where the password came from, for the start-up log (never the password itself) */
    passwordSource: "passwordFile" | "systemd-credential" | "none";
    /** problems worth a warning, e.g. a password file other users can read */
    warnings: string[];
}

/**
 * Reads the password and TLS files named by the configuration. An explicitly configured file that
 * cannot be read is a ConfigError naming the key; an absent systemd credential just means "no
 * password", and so does an empty one (the unit supplies an empty fallback so it starts without one).
 */
export function readBrokerSecrets(m: BrokerSecretsConfig, env: NodeJS.ProcessEnv = process.env): BrokerSecrets {
    const warnings: string[] = [];
    let password: Buffer | undefined;
    let passwordSource: BrokerSecrets["passwordSource"] = "none";
    if (m.passwordFile !== "") {
        password = passwordFrom(readConfigured("mqtt.passwordFile", m.passwordFile));
        passwordSource = "passwordFile";
        if (password === undefined) warnings.push(`mqtt.passwordFile ${m.passwordFile} is empty: connecting without a password`);
        const mode = statSync(m.passwordFile).mode;
        if ((mode & 0o077) !== 0)
            warnings.push(`mqtt.passwordFile ${m.passwordFile} can be read by other users (mode ${(mode & 0o777).toString(8)}): chmod 600 it`);
    } else if (env.CREDENTIALS_DIRECTORY) {
        try {
            password = passwordFrom(readFileSync(join(env.CREDENTIALS_DIRECTORY, PASSWORD_CREDENTIAL)));
        } catch {
            password = undefined;
        }
        if (password !== undefined) passwordSource = "systemd-credential";
    }
    return {
        ...(password !== undefined ? {password} : {}),
        ...(m.ca !== "" ? {ca: readConfigured("mqtt.ca", m.ca)} : {}),
        ...(m.cert !== "" ? {cert: readConfigured("mqtt.cert", m.cert)} : {}),
        ...(m.key !== "" ? {key: readConfigured("mqtt.key", m.key)} : {}),
        passwordSource, warnings
    };
}

/** The login and TLS options of an MQTT.js client (or of LinkOptions): only those that are set. */
export interface BrokerAuth extends BrokerFiles {
    username?: string;
}

/** `username` (mqtt.username, "" for none) and the files' contents, as client options. */
export function brokerAuth(username: string, secrets: BrokerFiles): BrokerAuth {
    return {
        ...(username ? {username} : {}),
        ...(secrets.password ? {password: secrets.password} : {}),
        ...(secrets.ca ? {ca: secrets.ca} : {}),
        ...(secrets.cert ? {cert: secrets.cert} : {}),
        ...(secrets.key ? {key: secrets.key} : {})
    };
}

/** One trailing newline is what `echo secret > file` leaves; it is not part of the password. */
function passwordFrom(data: Buffer): Buffer | undefined {
    const text = data.toString("utf8").replace(/\r?\n$/, "");
    return text === "" ? undefined : Buffer.from(text, "utf8");
}

function readConfigured(key: string, path: string): Buffer {
    try {
        return readFileSync(path);
    } catch (err) {
        const code = (err as {code?: string}).code ?? "";
        const hint = code === "EACCES"
            ? " (under systemd the service's dynamic user must be able to read it: load private keys with LoadCredential= and point to /run/credentials/qwen-edge.service/ID)"
            : "";
        throw new ConfigError(`${key}: cannot read ${path}: ${code || (err as Error).message}${hint}`);
    }
}

/** Refusal for every way a user might try to hand us a password directly. */
export function passwordNotAccepted(where: string, why = "a broker password is never taken from the command line or " +
    "the environment (other processes can read both)"): ConfigError {
    return new ConfigError(`${where}: ${why}. Put it in a file only this service can read and set mqtt.passwordFile ` +
        `(--mqtt-password-file FILE), or under systemd load it as the credential "${PASSWORD_CREDENTIAL}" ` +
        "(LoadCredential=mqtt-password:/etc/qwen-edge/mqtt-password)");
}
