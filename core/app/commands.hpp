#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "sightline/host/config_loader.hpp"

namespace sightline::app {

struct GlobalOptions {
    std::string config;               // empty: config/default.yaml if present, else the embedded default
    std::vector<std::string> overrides;
    std::string log_level;
};

host::LoadedConfig load(const GlobalOptions& options);
std::vector<std::filesystem::path> fallback_plugin_paths();

int cmd_ingest(const GlobalOptions& g, const std::vector<std::string>& inputs, const std::string& id_from);
int cmd_query(const GlobalOptions& g, const std::vector<std::string>& images, const std::string& pipeline, bool pretty);
int cmd_serve(const GlobalOptions& g);
int cmd_plugins(const GlobalOptions& g);
int cmd_plugins_describe(const GlobalOptions& g, const std::string& name);
int cmd_config_check(const GlobalOptions& g, const std::string& file);

struct VocabTrainOptions {
    std::string from;           // a directory of images or a storage name
    std::string out;            // key in `storage`
    std::string storage = "vocab";
    std::string pipeline;       // empty: the config's default
    int branching = 16;
    int depth = 4;
    int iterations = 8;
    std::size_t max_samples = 400000;
    std::size_t max_images = 0;  // 0: all
    int crops = 0;               // extra random crops per image
    std::uint64_t seed = 1;
};
int cmd_vocab_train(const GlobalOptions& g, const VocabTrainOptions& options);

}  // namespace sightline::app
