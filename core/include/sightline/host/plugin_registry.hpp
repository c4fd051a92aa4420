#pragma once
#include <boost/dll/shared_library.hpp>
#include <sightline/plugin.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <deque>
#include <utility>
#include <vector>

namespace sightline::host {

struct LoadedPlugin {
    std::filesystem::path file;
    std::shared_ptr<boost::dll::shared_library> library;
    const PluginManifest* manifest = nullptr;

    std::string full_name() const;  // "<kind>-<name>"
    ConfigSchema schema() const { return {manifest->config_keys, manifest->config_key_count}; }
};

struct RefusedPlugin {
    std::filesystem::path file;
    std::string reason;
};

// "libsightline_<kind>_<name>.so", dashes in the name becoming underscores.
std::string plugin_file_name(PluginKind kind, const std::string& name);

// Throws, from inside a catch block, an Error built by the host in place of the exception being
// handled: same code and message for an Error, ErrorCode::internal naming `plugin` for anything
// else. The copy stays readable after the plugin's library is unloaded; the original would not
// (its vtable and type_info live in the library).
[[noreturn]] void rethrow_as_host_error(const std::string& plugin);

// Runs one call into a plugin; whatever it throws leaves as a host-owned Error.
template <class F> decltype(auto) call_plugin(const std::string& plugin, F&& f) {
    try {
        return std::forward<F>(f)();
    } catch (...) {
        rethrow_as_host_error(plugin);
    }
}

// Refuses, with an Error naming the file, what dlopen must not be given: a file that is not a
// 64-bit ELF shared library for this machine, or whose headers or segments reach past its end
// (a truncated copy; dlopen would map it and die of SIGBUS touching the missing pages).
void check_elf_file(const std::filesystem::path& file);

// Owns every plugin library. Libraries are loaded once, from one thread, and none is unloaded
// while the registry lives; every object it creates also holds its library.
class PluginRegistry {
public:
    explicit PluginRegistry(std::vector<std::filesystem::path> search_paths);

    // Loads every libsightline_*.so in the search paths. A library that cannot be used is kept in
    // refused() with the reason, so asking for it later explains why it is missing. One that a
    // later search path's real plugin of the same file name replaces is also a warning (logged
    // and kept in warnings()): the user put it first to have it used.
    void load_all();
    // Loads one file and checks its manifest; throws Error naming the file on refusal.
    const LoadedPlugin& load_file(const std::filesystem::path& file);

    const LoadedPlugin* find(PluginKind kind, const std::string& name) const;
    // Like find, but throws an Error that lists what is available and where it looked.
    const LoadedPlugin& get(PluginKind kind, const std::string& name) const;
    const std::deque<LoadedPlugin>& plugins() const { return plugins_; }
    const std::vector<RefusedPlugin>& refused() const { return refused_; }
    const std::vector<std::string>& warnings() const { return warnings_; }
    const std::vector<std::filesystem::path>& search_paths() const { return paths_; }

    // Calls the plugin's factory; the result keeps the library loaded for as long as it lives.
    // Every call through it (the factory's too) is made through call_plugin, so no exception of
    // the plugin's own reaches the caller.
    template <PluginKind K> std::shared_ptr<kind_base_t<K>> create(const LoadedPlugin& plugin, Context& context) const {
        auto holder = create_plugin(plugin, K, context);
        auto* typed = dynamic_cast<kind_base_t<K>*>(holder.get());
        if (!typed)
            throw Error(ErrorCode::internal, plugin.file.string() + ": factory returned an object of the wrong kind");
        return std::shared_ptr<kind_base_t<K>>(holder, typed);
    }

private:
    std::shared_ptr<Plugin> create_plugin(const LoadedPlugin& plugin, PluginKind kind, Context& context) const;

    std::vector<std::filesystem::path> paths_;
    std::deque<LoadedPlugin> plugins_;
    std::vector<RefusedPlugin> refused_;
    std::vector<std::string> warnings_;
};

}  // namespace sightline::host
