// The `sightline` command line: ingest, query, serve, plugins, config check.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "commands.hpp"

int main(int argc, char** argv) {
    using namespace sightline::app;
    CLI::App app{"sightline: recognise gallery items (posters, covers, artworks) in photos"};
    app.require_subcommand(1);
    app.fallthrough();  // global options may follow the subcommand
    GlobalOptions g;
    app.add_option("-c,--config", g.config, "config file (default: config/default.yaml, else the built-in default)");
    app.add_option("--set", g.overrides, "override a config value: --set limits.queue=128")
        ->allow_extra_args(false)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    app.add_option("--log-level", g.log_level, "trace, debug, info, warn, error or off (overrides logging.level)");

    std::vector<std::string> inputs;
    std::string id_from = "stem";
    auto* ingest = app.add_subcommand("ingest", "add images (files or directories) to the gallery");
    ingest->add_option("inputs", inputs, "image files or directories")->required();
    ingest->add_option("--id-from", id_from, "item id from the file name's stem or whole name")
        ->check(CLI::IsMember({"stem", "name"}));

    std::vector<std::string> images;
    std::string pipeline;
    bool pretty = false;
    auto* query = app.add_subcommand("query", "recognise images and print one JSON result per line");
    query->add_option("images", images, "query images")->required();
    query->add_option("-p,--pipeline", pipeline, "pipeline to use (default: the config's default)");
    query->add_flag("--pretty", pretty, "indent the JSON");

    auto* serve = app.add_subcommand("serve", "run the configured transports and sinks until SIGTERM/SIGINT");

    auto* plugins = app.add_subcommand("plugins", "list loaded plugins (kind, name, version, file)");
    std::string describe_name;
    auto* describe = plugins->add_subcommand("describe", "print a plugin's config keys");
    describe->add_option("name", describe_name, "KIND-NAME as `sightline plugins` lists it")->required();

    auto* config = app.add_subcommand("config", "config tools");
    config->require_subcommand(1);
    std::string check_file;
    auto* check = config->add_subcommand("check", "validate a config file and every plugin section in it");
    check->add_option("file", check_file, "config file (default: --config)");

    CLI11_PARSE(app, argc, argv);
    // stdout carries results (JSON); logs go to stderr.
    spdlog::set_default_logger(spdlog::stderr_color_mt("sightline"));
    try {
        if (*ingest) return cmd_ingest(g, inputs, id_from);
        if (*query) return cmd_query(g, images, pipeline, pretty);
        if (*serve) return cmd_serve(g);
        if (*describe) return cmd_plugins_describe(g, describe_name);
        if (*plugins) return cmd_plugins(g);
        if (*check) return cmd_config_check(g, check_file);
    } catch (const std::exception& e) {
        std::cerr << "sightline: " << e.what() << "\n";
        return 2;
    }
    return 0;
}
