#pragma once
#include <yaml-cpp/yaml.h>

#include <sightline/config.hpp>

#include <string>
#include <vector>

namespace sightline::host {

// A parsed config file with ${VAR} expanded and --set overrides applied.
struct LoadedConfig {
    YAML::Node root;
    std::string file;  // as given by the user, used in every message
};

// Reads and parses a file; ${VAR} and ${VAR:-default} expand in scalars from the environment.
// SIGHTLINE_SHARE, when the environment does not set it, is share_dir().
LoadedConfig load_config_file(const std::string& path);
LoadedConfig load_config_text(const std::string& text, const std::string& name);
// "a.b.c=value": the value is parsed as YAML, so lists ("[x, y]") and numbers work.
void apply_override(LoadedConfig& config, const std::string& assignment);

// Validates one mapping against a schema: unknown keys (with a did-you-mean and the allowed keys),
// types, bounds, choices and required keys. `also_allowed` are keys the caller handles itself
// (nested sections, "type"). Messages are appended to `errors`.
void validate_section(const YAML::Node& node, ConfigSchema schema, const std::string& file, const std::string& path,
                      const std::vector<std::string>& also_allowed, std::vector<std::string>& errors);

// <directory of the running executable>/../share/sightline: where the build tree and `cmake
// --install` put the data files the shipped configs name (vocabularies), beside bin/ and plugins.
std::string share_dir();

// "config.yaml:12" for a node.
std::string where(const std::string& file, const YAML::Node& node);
// The closest candidate within a small edit distance, or "".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace sightline::host
