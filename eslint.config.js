// Lint rules: typescript-eslint's recommended type-aware set, plus a few that catch daemon bugs
// (floating promises lose errors; misused promises break event handlers).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
    {ignores: ["dist/**", "node_modules/**", ".tmp/**", "bench/results/**", "bench/cache/**", "eslint.config.js", "test/run.mjs", "scratch-*"]},
    js.configs.recommended,
    ...tseslint.configs.recommendedTypeChecked,
    {
        languageOptions: {parserOptions: {projectService: true, tsconfigRootDir: import.meta.dirname}},
        rules: {
            "@typescript-eslint/no-floating-promises": "error",
            "@typescript-eslint/no-misused-promises": ["error", {checksVoidReturn: {arguments: false}}],
            "@typescript-eslint/no-unused-vars": ["error", {argsIgnorePattern: "^_", varsIgnorePattern: "^_"}],
            "@typescript-eslint/restrict-template-expressions": ["error", {allowNumber: true, allowBoolean: true}],
            "@typescript-eslint/require-await": "off",
            "no-console": "error"
        }
    },
    {
        // node:test's describe/it return promises that the runner itself awaits.
        files: ["test/**/*.ts"],
        rules: {
            "@typescript-eslint/no-floating-promises": ["error", {allowForKnownSafeCalls: [
                {from: "package", package: "node:test", name: ["describe", "it", "test", "suite", "before", "after", "beforeEach", "afterEach"]}
            ]}]
        }
    }
);
