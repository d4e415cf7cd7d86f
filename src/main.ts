#!/usr/bin/env node
/**
 * CLI entry: `qwen-edge [run] | plan | pull | ask | status | config | routes`. Exit codes:
 * 0 ok, 1 runtime failure, 2 bad configuration or usage, 3 no model fits, 4 no answer in time.
 */
import {ConfigError, describeError, NoModelFitsError} from "./errors.js";
import {commands, usage} from "./cli/commands.js";
import {EXIT} from "./cli/exit.js";



async function main(argv: string[]): Promise<number> {
    const first = argv[0];
    if (first === "--help" || first === "-h" || first === "help") {
        process.stdout.write(usage(argv[1]));
        return EXIT.ok;
    }
    if (first === "--version" || first === "-V") {
        const {packageVersion} = await import("./version.js");
        process.stdout.write(`qwen-edge ${packageVersion()}\n`);
        return EXIT.ok;
    }
    const name = first === undefined || first.startsWith("-") ? "run" : first;
    const args = first === undefined || first.startsWith("-") ? argv : argv.slice(1);
    const command = commands[name];
    if (!command) {
        process.stderr.write(`qwen-edge: unknown command "${name}"\n\n${usage()}`);
        return EXIT.usage;
    }
    if (args.includes("--help") || args.includes("-h")) {
        process.stdout.write(usage(name));
        return EXIT.ok;
    }
    return command(args);
}

main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
}, (err: unknown) => {
    if (err instanceof ConfigError) {
        process.stderr.write(`qwen-edge: configuration error:\n${err.message.split("\n").map((l) => `  ${l}`).join("\n")}\n`);
        process.exitCode = EXIT.usage;
    } else if (err instanceof NoModelFitsError) {
        process.stderr.write(`qwen-edge: ${err.message}\n`);
        process.exitCode = EXIT.noModelFits;
    } else {
        const d = describeError(err);
        process.stderr.write(`qwen-edge: ${d.message}\n`);
        process.exitCode = EXIT.failure;
    }
});
