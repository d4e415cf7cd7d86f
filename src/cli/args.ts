/** Small argv helpers shared by the subcommands: own flags are taken out, the rest is configuration. */
import {knownArgs} from "../config.js";
import {ConfigError} from "../errors.js";
import {passwordNotAccepted} from "../mqtt/credentials.js";

export interface FlagSpec {
    /** flag names (without --) that take a value */
    values?: string[];
    /** flag names that are booleans */
    booleans?: string[];
}

export interface SplitArgs {
    flags: Record<string, string | boolean>;
    positional: string[];
    /** what remains: configuration flags for loadConfig */
    config: string[];
}

/** Splits argv into the command's own flags, positional arguments and configuration flags. */
export function splitArgs(args: string[], spec: FlagSpec = {}): SplitArgs {
    const flags: Record<string, string | boolean> = {};
    const positional: string[] = [];
    const config: string[] = [];
    const known = knownArgs();
    for (let i = 0; i < args.length; i++) {
        const arg = args[i] ?? "";
        if (!arg.startsWith("--")) {
            positional.push(arg);
            continue;
        }
        const [rawName, inlineValue] = arg.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
        if (spec.booleans?.includes(rawName)) {
            flags[rawName] = inlineValue === undefined ? true : inlineValue !== "false";
        } else if (spec.values?.includes(rawName)) {
            const value = inlineValue ?? args[++i];
            if (value === undefined) throw new ConfigError(`--${rawName} needs a value`);
            flags[rawName] = value;
        } else if (rawName === "config" || known.has(rawName)) {
            config.push(arg);
            const next = args[i + 1];
            if (inlineValue === undefined && next !== undefined && !next.startsWith("--")) config.push(args[++i] ?? "");
        } else if (/pass(word)?$/i.test(rawName)) {
            throw passwordNotAccepted(`--${rawName}`);
        } else {
            throw new ConfigError(`--${rawName}: unknown option (see --help; every configuration key is also an option, e.g. --inference-threads)`);
        }
    }
    return {flags, positional, config};
}
