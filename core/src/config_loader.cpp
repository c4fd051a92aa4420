#include "sightline/host/config_loader.hpp"

#include <boost/dll/runtime_symbol_info.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace sightline::host {

std::string where(const std::string& file, const YAML::Node& node) {
    std::string w = file.empty() ? "<config>" : file;
    if (node.IsDefined() && node.Mark().line >= 0) w += ":" + std::to_string(node.Mark().line + 1);
    return w;
}

namespace {

std::size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::string expand_env(const std::string& text, const std::string& location) {
    std::string out;
    std::size_t i = 0;
    while (i < text.size()) {
        if (text.compare(i, 2, "${") != 0) {
            out += text[i++];
            continue;
        }
        std::size_t close = text.find('}', i + 2);
        if (close == std::string::npos)
            throw Error(ErrorCode::invalid_argument, location + ": unterminated '${' in '" + text + "'");
        std::string expr = text.substr(i + 2, close - i - 2);
        std::string name = expr, fallback;
        bool has_fallback = false;
        if (auto p = expr.find(":-"); p != std::string::npos) {
            name = expr.substr(0, p);
            fallback = expr.substr(p + 2);
            has_fallback = true;
        }
        bool valid = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0]));
        for (char c : name) valid = valid && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
        if (!valid)
            throw Error(ErrorCode::invalid_argument,
                        location + ": '${" + expr + "}' is not a valid environment variable reference (use ${NAME} or ${NAME:-default})");
        const char* value = std::getenv(name.c_str());
        if (value)
            out += value;
        else if (name == "SIGHTLINE_SHARE")
            out += share_dir();
        else if (has_fallback)
            out += fallback;
        else
            throw Error(ErrorCode::invalid_argument,
                        location + ": environment variable " + name + " is not set (referenced as ${" + expr + "})");
        i = close + 1;
    }
    return out;
}

// `file` empty: the tree came from `--set` and messages name the option instead of a file:line.
void expand_tree(YAML::Node node, const std::string& file, const std::string& path) {
    if (node.IsScalar()) {
        const std::string& s = node.Scalar();
        if (s.find("${") != std::string::npos)
            node = expand_env(s, file.empty() ? "--set " + path : where(file, node) + ": " + path);
    } else if (node.IsMap()) {
        for (auto it = node.begin(); it != node.end(); ++it)
            expand_tree(it->second, file, path.empty() ? it->first.Scalar() : path + "." + it->first.Scalar());
    } else if (node.IsSequence()) {
        for (std::size_t i = 0; i < node.size(); ++i) expand_tree(node[i], file, path + "[" + std::to_string(i) + "]");
    }
}

LoadedConfig parse(const std::string& text, const std::string& name) {
    LoadedConfig c;
    c.file = name;
    try {
        c.root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        throw Error(ErrorCode::invalid_argument,
                    name + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                        ": YAML syntax error: " + e.msg);
    }
    if (c.root.IsNull()) c.root = YAML::Node(YAML::NodeType::Map);
    if (!c.root.IsMap()) throw Error(ErrorCode::invalid_argument, name + ": the config must be a YAML mapping");
    expand_tree(c.root, name, "");
    return c;
}

}  // namespace

std::string share_dir() {
    boost::dll::fs::error_code ec;
    const std::filesystem::path exe = boost::dll::program_location(ec).string();
    if (ec) return "share/sightline";
    return (exe.parent_path().parent_path() / "share" / "sightline").lexically_normal().string();
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates) {
    std::string best;
    std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto& c : candidates) {
        std::size_t d = edit_distance(word, c);
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    return best;
}

LoadedConfig load_config_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw Error(ErrorCode::not_found, "cannot read config file '" + path + "'");
    std::stringstream ss;
    ss << in.rdbuf();
    return parse(ss.str(), path);
}

LoadedConfig load_config_text(const std::string& text, const std::string& name) { return parse(text, name); }

void apply_override(LoadedConfig& config, const std::string& assignment) {
    auto eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0)
        throw Error(ErrorCode::invalid_argument, "--set " + assignment + ": expected KEY.PATH=VALUE");
    std::string path = assignment.substr(0, eq), value = assignment.substr(eq + 1);
    std::vector<std::string> parts;
    std::stringstream ss(path);
    for (std::string part; std::getline(ss, part, '.');) {
        if (part.empty()) throw Error(ErrorCode::invalid_argument, "--set " + assignment + ": empty key in '" + path + "'");
        parts.push_back(part);
    }
    YAML::Node parsed;
    try {
        parsed = YAML::Load(value);
    } catch (const YAML::Exception& e) {
        throw Error(ErrorCode::invalid_argument, "--set " + assignment + ": the value is not valid YAML: " + e.msg);
    }
    // Every scalar of a list or map value too, before anything in the config changes.
    expand_tree(parsed, "", path);
    // Walk with reset() rather than assignment: assigning one yaml-cpp node to another aliases them.
    YAML::Node node;
    node.reset(config.root);
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
        if (node[parts[i]] && !node[parts[i]].IsMap())
            throw Error(ErrorCode::invalid_argument, "--set " + assignment + ": '" + parts[i] + "' is not a mapping");
        if (!node[parts[i]]) node[parts[i]] = YAML::Node(YAML::NodeType::Map);
        YAML::Node next = node[parts[i]];
        node.reset(next);
    }
    node[parts.back()] = parsed;
}

void validate_section(const YAML::Node& node, ConfigSchema schema, const std::string& file, const std::string& path,
                      const std::vector<std::string>& also_allowed, std::vector<std::string>& errors) {
    if (!node.IsDefined() || node.IsNull()) {
        for (const auto& k : schema)
            if (k.required) errors.push_back(where(file, node) + ": " + path + "." + k.name + ": required key is missing");
        return;
    }
    if (!node.IsMap()) {
        errors.push_back(where(file, node) + ": " + path + ": expected a mapping of keys");
        return;
    }
    std::vector<std::string> allowed;
    for (const auto& k : schema) allowed.push_back(k.name);
    allowed.insert(allowed.end(), also_allowed.begin(), also_allowed.end());
    Config view(node, file, path, schema);
    for (auto it = node.begin(); it != node.end(); ++it) {
        std::string key = it->first.Scalar();
        if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
            std::string msg = where(file, it->first) + ": " + path + ": unknown key '" + key + "'";
            if (auto guess = did_you_mean(key, allowed); !guess.empty()) msg += "; did you mean '" + guess + "'?";
            msg += " (allowed:";
            for (std::size_t i = 0; i < allowed.size(); ++i) msg += (i ? ", " : " ") + allowed[i];
            msg += ")";
            errors.push_back(msg);
        }
    }
    for (const auto& k : schema) {
        const std::string key = k.name;
        if (!view.has(key)) {
            if (k.required) errors.push_back(where(file, node) + ": " + path + "." + key + ": required key is missing");
            continue;
        }
        try {
            double numeric = 0;
            bool check_bounds = false;
            switch (k.type) {
                case ConfigType::string: (void)view.get_string(key); break;
                case ConfigType::integer: numeric = static_cast<double>(view.get_int(key)); check_bounds = true; break;
                case ConfigType::number: numeric = view.get_double(key); check_bounds = true; break;
                case ConfigType::boolean: (void)view.get_bool(key); break;
                case ConfigType::bytes: numeric = static_cast<double>(view.get_bytes(key)); check_bounds = true; break;
                case ConfigType::duration:
                    numeric = static_cast<double>(view.get_duration(key).count());
                    check_bounds = true;
                    break;
                case ConfigType::string_list: (void)view.get_strings(key); break;
            }
            auto fmt = [](double v) {
                std::ostringstream s;
                s << v;
                return s.str();
            };
            if (check_bounds && (numeric < k.min || numeric > k.max)) {
                std::string range = std::isinf(k.max) ? "at least " + fmt(k.min)
                                    : std::isinf(k.min) ? "at most " + fmt(k.max)
                                                        : "between " + fmt(k.min) + " and " + fmt(k.max);
                errors.push_back(view.where(key) + ": " + view.key_path(key) + ": expected a value " + range +
                                 ", found " + view.scalar(key));
            }
            if (k.choices) {
                std::string value = view.scalar(key);
                std::vector<std::string> choices;
                std::stringstream cs(k.choices);
                for (std::string c; std::getline(cs, c, '|');) choices.push_back(c);
                if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
                    std::string msg = view.where(key) + ": " + view.key_path(key) + ": expected one of";
                    for (std::size_t i = 0; i < choices.size(); ++i) msg += (i ? ", " : " ") + choices[i];
                    msg += ", found '" + value + "'";
                    if (auto guess = did_you_mean(value, choices); !guess.empty()) msg += "; did you mean '" + guess + "'?";
                    errors.push_back(msg);
                }
            }
        } catch (const Error& e) {
            errors.push_back(e.what());
        }
    }
}

}  // namespace sightline::host
