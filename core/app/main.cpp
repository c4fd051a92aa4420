// The `sightline` command line: ingest, query, serve, plugins, config check, vocab train.
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

    VocabTrainOptions vt;
    auto* vocab = app.add_subcommand("vocab", "visual vocabularies for index-vocab");
    vocab->require_subcommand(1);
    auto* train = vocab->add_subcommand("train", "train a vocabulary tree on images, for one pipeline's extractor");
    train->add_option("--from", vt.from, "a directory of images, or a storage named in the config")->required();
    train->add_option("--out", vt.out, "key of the vocabulary in --storage, e.g. default.voc")->required();
    train->add_option("--storage", vt.storage, "storage to write it to")->capture_default_str();
    train->add_option("-p,--pipeline", vt.pipeline, "pipeline whose gallery extractor it is for (default: the config's default)");
    train->add_option("--branching", vt.branching, "children per node")->check(CLI::Range(2, 256))->capture_default_str();
    train->add_option("--depth", vt.depth, "levels; words <= branching^depth")->check(CLI::Range(1, 8))->capture_default_str();
    train->add_option("--iterations", vt.iterations, "clustering rounds per node")->check(CLI::Range(1, 100))->capture_default_str();
    train->add_option("--max-samples", vt.max_samples, "descriptors clustered, sampled evenly")->check(CLI::Range(16, 50000000))->capture_default_str();
    train->add_option("--max-images", vt.max_images, "use at most this many images (0: all)");
    train->add_option("--crops", vt.crops, "also extract from N random crops of each image")->check(CLI::Range(0, 100))->capture_default_str();
    train->add_option("--seed", vt.seed, "random seed (same seed and images: same vocabulary)")->capture_default_str();

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
        if (*train) return cmd_vocab_train(g, vt);
    } catch (const std::exception& e) {
        // Plugin errors arrive here as host-owned copies (call_plugin): the host, and with it
        // every plugin library, is gone by now.
        std::cerr << "sightline: " << e.what() << "\n";
        return 1;
    } catch (...) {
        std::cerr << "sightline: failed with an exception that is not a std::exception\n";
        return 1;
    }
    return 0;
}
