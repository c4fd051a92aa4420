#pragma once
// Declared config schemas (after Fluent Bit's config_map) and the typed view a plugin reads.
// The host validates a plugin's YAML section against its schema before the factory runs, so a
// getter for a key the schema declares never fails on user input.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "sightline/error.hpp"

namespace sightline {

enum class ConfigType : std::uint32_t {
    string,
    integer,
    number,
    boolean,
    bytes,        // "20MB", "512KiB", 1048576
    duration,     // "5s", "250ms", "2m"
    string_list,  // [a, b] or a single string
};

inline const char* to_string(ConfigType t) {
    switch (t) {
        case ConfigType::string: return "a string";
        case ConfigType::integer: return "an integer";
        case ConfigType::number: return "a number";
        case ConfigType::boolean: return "true or false";
        case ConfigType::bytes: return "a size such as 512KB or 20MB";
        case ConfigType::duration: return "a duration such as 250ms or 5s";
        case ConfigType::string_list: return "a list of strings";
    }
    return "?";
}

// C layout on purpose: schemas live in the plugin manifest and are read by the host before any
// plugin code runs.
struct ConfigKey {
    const char* name = nullptr;
    ConfigType type = ConfigType::string;
    const char* default_value = nullptr;  // nullptr: no default
    bool required = false;
    double min = -std::numeric_limits<double>::infinity();
    double max = std::numeric_limits<double>::infinity();
    const char* choices = nullptr;  // "a|b|c": the only values accepted
    const char* description = "";
};

using ConfigSchema = std::span<const ConfigKey>;

namespace config_detail {

inline std::string trim(std::string s) {
    auto ws = [](unsigned char c) { return std::isspace(c) != 0; };
    while (!s.empty() && ws(s.back())) s.pop_back();
    std::size_t i = 0;
    while (i < s.size() && ws(s[i])) ++i;
    return s.substr(i);
}

inline std::optional<double> parse_number(const std::string& text) {
    std::string t = trim(text);
    if (t.empty()) return std::nullopt;
    std::istringstream in(t);
    in.imbue(std::locale::classic());
    double v = 0;
    in >> v;
    if (in.fail() || !in.eof() || !std::isfinite(v)) return std::nullopt;
    return v;
}

inline std::optional<std::int64_t> parse_integer(const std::string& text) {
    std::string t = trim(text);
    if (t.empty()) return std::nullopt;
    std::size_t i = (t[0] == '-' || t[0] == '+') ? 1 : 0;
    if (i == t.size()) return std::nullopt;
    for (std::size_t j = i; j < t.size(); ++j)
        if (t[j] < '0' || t[j] > '9') return std::nullopt;
    try {
        return std::stoll(t);
    } catch (...) {
        return std::nullopt;
    }
}

// Splits "20MB" into 20 and "mb" (lower case).
inline std::optional<std::pair<double, std::string>> split_unit(const std::string& text) {
    std::string t = trim(text);
    std::size_t i = 0;
    while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
    if (i == 0) return std::nullopt;
    auto num = parse_number(t.substr(0, i));
    if (!num) return std::nullopt;
    std::string unit = trim(t.substr(i));
    std::transform(unit.begin(), unit.end(), unit.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return std::make_pair(*num, unit);
}

}  // namespace config_detail

// "20MB" → 20,000,000; "20MiB" → 20,971,520; "M" alone means 10^6 (limits.max_pixels: 50M).
inline std::optional<std::uint64_t> parse_bytes(const std::string& text) {
    auto p = config_detail::split_unit(text);
    if (!p) return std::nullopt;
    static const std::pair<const char*, double> units[] = {
        {"", 1},         {"b", 1},           {"k", 1e3},           {"kb", 1e3},
        {"kib", 1024.0}, {"m", 1e6},         {"mb", 1e6},          {"mib", 1048576.0},
        {"g", 1e9},      {"gb", 1e9},        {"gib", 1073741824.0}};
    for (const auto& [name, factor] : units)
        if (p->second == name) {
            double v = p->first * factor;
            if (v < 0 || v > 1.8e19) return std::nullopt;
            return static_cast<std::uint64_t>(std::llround(v));
        }
    return std::nullopt;
}

inline std::optional<std::chrono::milliseconds> parse_duration(const std::string& text) {
    auto p = config_detail::split_unit(text);
    if (!p) return std::nullopt;
    static const std::pair<const char*, double> units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60000}, {"min", 60000}, {"h", 3600000}};
    for (const auto& [name, factor] : units)
        if (p->second == name)
            return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(p->first * factor)));
    return std::nullopt;
}

// A plugin's (or host section's) validated configuration: a YAML mapping, the file it came from
// and its key path, so every message can say "config.yaml:12: pipelines.orb.features.max_features".
class Config {
public:
    Config() = default;
    Config(YAML::Node node, std::string file, std::string path, ConfigSchema schema = {})
        : node_(std::move(node)), file_(std::move(file)), path_(std::move(path)), schema_(schema) {}

    const YAML::Node& node() const { return node_; }
    const std::string& file() const { return file_; }
    const std::string& path() const { return path_; }
    ConfigSchema schema() const { return schema_; }

    std::string key_path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

    // "config.yaml:12" for the key (or the section when the key is absent).
    std::string where(const std::string& key = {}) const {
        YAML::Mark mark = node_.Mark();
        if (!key.empty() && node_.IsMap() && node_[key]) mark = node_[key].Mark();
        std::string w = file_.empty() ? std::string("<config>") : file_;
        if (mark.line >= 0) w += ":" + std::to_string(mark.line + 1);
        return w;
    }

    bool has(const std::string& key) const { return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull(); }

    std::string get_string(const std::string& key) const { return scalar(key); }
    std::int64_t get_int(const std::string& key) const {
        auto v = config_detail::parse_integer(scalar(key));
        if (!v) fail(key, ConfigType::integer);
        return *v;
    }
    double get_double(const std::string& key) const {
        auto v = config_detail::parse_number(scalar(key));
        if (!v) fail(key, ConfigType::number);
        return *v;
    }
    bool get_bool(const std::string& key) const {
        std::string s = scalar(key);
        if (s == "true" || s == "yes" || s == "on") return true;
        if (s == "false" || s == "no" || s == "off") return false;
        fail(key, ConfigType::boolean);
    }
    std::uint64_t get_bytes(const std::string& key) const {
        auto v = parse_bytes(scalar(key));
        if (!v) fail(key, ConfigType::bytes);
        return *v;
    }
    std::chrono::milliseconds get_duration(const std::string& key) const {
        auto v = parse_duration(scalar(key));
        if (!v) fail(key, ConfigType::duration);
        return *v;
    }
    std::vector<std::string> get_strings(const std::string& key) const {
        std::vector<std::string> out;
        if (node_.IsMap() && node_[key] && node_[key].IsSequence()) {
            for (const auto& item : node_[key]) {
                if (!item.IsScalar()) fail(key, ConfigType::string_list);
                out.push_back(item.Scalar());
            }
            return out;
        }
        if (has(key) || default_of(key)) out.push_back(scalar(key));
        return out;
    }

    // The raw text a getter would parse: the YAML scalar, else the schema default.
    std::string scalar(const std::string& key) const {
        if (has(key)) {
            const YAML::Node v = node_[key];
            if (!v.IsScalar())
                throw Error(ErrorCode::invalid_argument,
                            where(key) + ": " + key_path(key) + ": expected a single value, found a " +
                                (v.IsSequence() ? "list" : "mapping"));
            return v.Scalar();
        }
        if (const char* d = default_of(key)) return d;
        throw Error(ErrorCode::invalid_argument,
                    where() + ": " + key_path(key) + ": required key is missing");
    }

private:
    const char* default_of(const std::string& key) const {
        for (const auto& k : schema_)
            if (key == k.name) return k.default_value;
        return nullptr;
    }
    [[noreturn]] void fail(const std::string& key, ConfigType expected) const {
        std::string found = has(key) && node_[key].IsScalar() ? node_[key].Scalar() : scalar(key);
        throw Error(ErrorCode::invalid_argument, where(key) + ": " + key_path(key) + ": expected " +
                                                     to_string(expected) + ", found '" + found + "'");
    }

    YAML::Node node_;
    std::string file_;
    std::string path_;
    ConfigSchema schema_;
};

}  // namespace sightline
