#include "sightline/host/plugin_registry.hpp"

#include <algorithm>
#include <cstring>

#include "sightline/host/config_loader.hpp"

namespace fs = std::filesystem;

namespace sightline::host {

std::string LoadedPlugin::full_name() const { return std::string(to_string(manifest->kind)) + "-" + manifest->name; }

std::string plugin_file_name(PluginKind kind, const std::string& name) {
    std::string n = name;
    std::replace(n.begin(), n.end(), '-', '_');
    return std::string("libsightline_") + to_string(kind) + "_" + n + ".so";
}

PluginRegistry::PluginRegistry(std::vector<fs::path> search_paths) : paths_(std::move(search_paths)) {}

void PluginRegistry::load_all() {
    std::vector<fs::path> visited;
    for (const auto& dir : paths_) {
        std::error_code ec;
        if (!fs::is_directory(dir, ec)) continue;
        fs::path real = fs::canonical(dir, ec);
        if (ec || std::find(visited.begin(), visited.end(), real) != visited.end()) continue;
        visited.push_back(real);
        std::vector<fs::path> files;
        for (const auto& entry : fs::directory_iterator(dir, ec)) {
            auto name = entry.path().filename().string();
            if (name.rfind("libsightline_", 0) == 0 && entry.path().extension() == ".so") files.push_back(entry.path());
        }
        std::sort(files.begin(), files.end());
        for (const auto& f : files) {
            try {
                load_file(f);
            } catch (const Error& e) {
                refused_.push_back({f, e.what()});
            }
        }
    }
}

const LoadedPlugin& PluginRegistry::load_file(const fs::path& file) {
    auto library = std::make_shared<boost::dll::shared_library>();
    boost::dll::fs::error_code ec;
    library->load(file.string(), boost::dll::load_mode::rtld_lazy | boost::dll::load_mode::rtld_local, ec);
    if (ec) {
        throw Error(ErrorCode::invalid_argument,
                    file.string() + " is not a sightline plugin: it cannot be loaded as a shared library (" +
                        ec.message() + ")");
    }
    if (!library->has("sightline_plugin_manifest"))
        throw Error(ErrorCode::invalid_argument,
                    file.string() + " is not a sightline plugin: it exports no sightline_plugin_manifest");
    const auto& m = library->get_alias<const PluginManifest>("sightline_plugin_manifest");

    // Only the first three fields are trusted until the versions say the layout is ours.
    auto versions = [](std::uint32_t major, std::uint32_t minor) {
        return std::to_string(major) + "." + std::to_string(minor);
    };
    if (m.abi_major != SIGHTLINE_ABI_MAJOR || m.abi_minor > SIGHTLINE_ABI_MINOR)
        throw Error(ErrorCode::unsupported,
                    file.string() + ": built for sightline plugin ABI " + versions(m.abi_major, m.abi_minor) +
                        ", this host supports ABI " + versions(SIGHTLINE_ABI_MAJOR, 0) + " to " +
                        versions(SIGHTLINE_ABI_MAJOR, SIGHTLINE_ABI_MINOR) + "; rebuild the plugin against this SDK");
    if (m.struct_size > sizeof(PluginManifest))
        throw Error(ErrorCode::unsupported, file.string() + ": its manifest is " + std::to_string(m.struct_size) +
                                                " bytes, more than this host understands (" +
                                                std::to_string(sizeof(PluginManifest)) + ")");
    if (!m.build_id || std::strcmp(m.build_id, SIGHTLINE_BUILD_ID) != 0)
        throw Error(ErrorCode::unsupported, file.string() + ": built with '" + (m.build_id ? m.build_id : "?") +
                                                "', this host with '" + SIGHTLINE_BUILD_ID +
                                                "'; plugins must be built with the host's compiler and SDK");
    auto kind = static_cast<std::uint32_t>(m.kind);
    if (kind < 1 || kind > 5 || !m.name || !m.create)
        throw Error(ErrorCode::invalid_argument, file.string() + ": its manifest is malformed");
    std::string expected = plugin_file_name(m.kind, m.name);
    if (file.filename() != expected)
        throw Error(ErrorCode::invalid_argument, file.string() + ": declares " + to_string(m.kind) + "-" + m.name +
                                                     " and should therefore be named " + expected);
    if (const auto* existing = find(m.kind, m.name))
        throw Error(ErrorCode::already_exists, file.string() + ": " + to_string(m.kind) + "-" + m.name +
                                                   " is already loaded from " + existing->file.string());
    plugins_.push_back(LoadedPlugin{file, std::move(library), &m});
    return plugins_.back();
}

const LoadedPlugin* PluginRegistry::find(PluginKind kind, const std::string& name) const {
    for (const auto& p : plugins_)
        if (p.manifest->kind == kind && name == p.manifest->name) return &p;
    return nullptr;
}

const LoadedPlugin& PluginRegistry::get(PluginKind kind, const std::string& name) const {
    if (const auto* p = find(kind, name)) return *p;
    std::string file = plugin_file_name(kind, name);
    for (const auto& r : refused_)
        if (r.file.filename() == file)
            throw Error(ErrorCode::not_found, std::string("the ") + to_string(kind) + " plugin '" + name +
                                                  "' could not be loaded: " + r.reason);
    std::vector<std::string> names;
    for (const auto& p : plugins_)
        if (p.manifest->kind == kind) names.push_back(p.manifest->name);
    std::string msg = std::string("no ") + to_string(kind) + " plugin named '" + name + "'";
    if (auto guess = did_you_mean(name, names); !guess.empty()) msg += "; did you mean '" + guess + "'?";
    msg += " (looked for " + file + " in";
    for (std::size_t i = 0; i < paths_.size(); ++i) msg += (i ? ", " : " ") + paths_[i].string();
    msg += "; available: ";
    if (names.empty()) msg += "none";
    for (std::size_t i = 0; i < names.size(); ++i) msg += (i ? ", " : "") + names[i];
    msg += ")";
    throw Error(ErrorCode::not_found, msg);
}

std::shared_ptr<Plugin> PluginRegistry::create_plugin(const LoadedPlugin& plugin, PluginKind kind,
                                                      Context& context) const {
    if (plugin.manifest->kind != kind)
        throw Error(ErrorCode::invalid_argument,
                    plugin.full_name() + " is a " + to_string(plugin.manifest->kind) + " plugin, not a " + to_string(kind));
    std::unique_ptr<Plugin> object;
    try {
        object.reset(plugin.manifest->create(context));
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error(ErrorCode::internal, plugin.full_name() + ": construction failed: " + e.what());
    }
    if (!object) throw Error(ErrorCode::internal, plugin.full_name() + ": factory returned nothing");
    // The deleter owns a reference to the library, so the code the object's vtable points into
    // stays mapped for as long as the object (Boost.DLL tutorial 8).
    auto library = plugin.library;
    return std::shared_ptr<Plugin>(object.release(), [library](Plugin* p) { std::unique_ptr<Plugin>{p}; });
}

}  // namespace sightline::host
