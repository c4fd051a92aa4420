#include "sightline/host/plugin_registry.hpp"

#include <elf.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>

#include "sightline/host/config_loader.hpp"
#include "sightline/host/host.hpp"

namespace fs = std::filesystem;

namespace sightline::host {

namespace {

// Host-side stand-ins for plugin objects: each forwards to the plugin's object through
// call_plugin, so every call into the library is wrapped in one place.
class GuardedExtractor final : public FeatureExtractor {
public:
    GuardedExtractor(std::shared_ptr<FeatureExtractor> inner, std::string name)
        : inner_(std::move(inner)), name_(std::move(name)) {}
    Features extract(const cv::Mat& gray) const override {
        return call_plugin(name_, [&] { return inner_->extract(gray); });
    }
    DescriptorInfo descriptor_info() const override {
        return call_plugin(name_, [&] { return inner_->descriptor_info(); });
    }
    std::string signature() const override { return call_plugin(name_, [&] { return inner_->signature(); }); }
    std::string descriptor_signature() const override {
        return call_plugin(name_, [&] { return inner_->descriptor_signature(); });
    }

private:
    std::shared_ptr<FeatureExtractor> inner_;
    std::string name_;
};

class GuardedIndex final : public Index {
public:
    GuardedIndex(std::shared_ptr<Index> inner, std::string name) : inner_(std::move(inner)), name_(std::move(name)) {}
    void add(const std::string& id, const Features& features) override {
        call_plugin(name_, [&] { inner_->add(id, features); });
    }
    bool remove(const std::string& id) override { return call_plugin(name_, [&] { return inner_->remove(id); }); }
    std::vector<Candidate> search(const Features& query, std::size_t k) const override {
        return call_plugin(name_, [&] { return inner_->search(query, k); });
    }
    std::size_t size() const override { return call_plugin(name_, [&] { return inner_->size(); }); }
    void save(std::ostream& out) const override { call_plugin(name_, [&] { inner_->save(out); }); }
    void load(std::istream& in) override { call_plugin(name_, [&] { inner_->load(in); }); }
    bool can_match_item() const override { return call_plugin(name_, [&] { return inner_->can_match_item(); }); }
    std::vector<Correspondence> match_item(const std::string& id, const Features& query) const override {
        return call_plugin(name_, [&] { return inner_->match_item(id, query); });
    }

private:
    std::shared_ptr<Index> inner_;
    std::string name_;
};

class GuardedStorage final : public Storage {
public:
    GuardedStorage(std::shared_ptr<Storage> inner, std::string name)
        : inner_(std::move(inner)), name_(std::move(name)) {}
    void put(const std::string& key, std::span<const std::uint8_t> bytes) override {
        call_plugin(name_, [&] { inner_->put(key, bytes); });
    }
    std::optional<Bytes> get(const std::string& key) const override {
        return call_plugin(name_, [&] { return inner_->get(key); });
    }
    bool remove(const std::string& key) override { return call_plugin(name_, [&] { return inner_->remove(key); }); }
    bool exists(const std::string& key) const override {
        return call_plugin(name_, [&] { return inner_->exists(key); });
    }
    std::vector<std::string> list(const std::string& prefix) const override {
        return call_plugin(name_, [&] { return inner_->list(prefix); });
    }

private:
    std::shared_ptr<Storage> inner_;
    std::string name_;
};

class GuardedTransport final : public Transport {
public:
    GuardedTransport(std::shared_ptr<Transport> inner, std::string name)
        : inner_(std::move(inner)), name_(std::move(name)) {}
    void start(Service& service) override { call_plugin(name_, [&] { inner_->start(service); }); }
    void stop(std::chrono::milliseconds drain_deadline) override {
        call_plugin(name_, [&] { inner_->stop(drain_deadline); });
    }

private:
    std::shared_ptr<Transport> inner_;
    std::string name_;
};

class GuardedSink final : public ResultSink {
public:
    GuardedSink(std::shared_ptr<ResultSink> inner, std::string name)
        : inner_(std::move(inner)), name_(std::move(name)) {}
    void publish(const Event& event) override { call_plugin(name_, [&] { inner_->publish(event); }); }
    void flush() override { call_plugin(name_, [&] { inner_->flush(); }); }

private:
    std::shared_ptr<ResultSink> inner_;
    std::string name_;
};

template <class Base, class Guard>
std::shared_ptr<Plugin> guard_as(const std::shared_ptr<Plugin>& object, const std::string& name) {
    auto* typed = dynamic_cast<Base*>(object.get());
    if (!typed) return nullptr;
    return std::make_shared<Guard>(std::shared_ptr<Base>(object, typed), name);
}

std::shared_ptr<Plugin> guard(const std::shared_ptr<Plugin>& object, PluginKind kind, const std::string& name) {
    switch (kind) {
        case PluginKind::features: return guard_as<FeatureExtractor, GuardedExtractor>(object, name);
        case PluginKind::index: return guard_as<Index, GuardedIndex>(object, name);
        case PluginKind::storage: return guard_as<Storage, GuardedStorage>(object, name);
        case PluginKind::transport: return guard_as<Transport, GuardedTransport>(object, name);
        case PluginKind::sink: return guard_as<ResultSink, GuardedSink>(object, name);
    }
    return nullptr;
}

// Sizes and offsets come from the file: checked without overflow.
bool range_fits(std::uint64_t offset, std::uint64_t length, std::uint64_t size) {
    return offset <= size && length <= size - offset;
}

#if defined(__x86_64__)
constexpr std::uint16_t kHostMachine = EM_X86_64;
#elif defined(__aarch64__)
constexpr std::uint16_t kHostMachine = EM_AARCH64;
#else
constexpr std::uint16_t kHostMachine = EM_NONE;  // not checked
#endif

}  // namespace

void rethrow_as_host_error(const std::string& plugin) {
    try {
        throw;
    } catch (const Error& e) {
        throw Error(e.code(), e.what());
    } catch (const std::exception& e) {
        throw Error(ErrorCode::internal, plugin + ": " + e.what());
    } catch (...) {
        throw Error(ErrorCode::internal, plugin + ": failed with an exception that is not a std::exception");
    }
}

void check_elf_file(const fs::path& file) {
    const std::string not_plugin = file.string() + " is not a sightline plugin: ";
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) throw Error(ErrorCode::not_found, not_plugin + "it cannot be read (" + ec.message() + ")");
    std::ifstream in(file, std::ios::binary);
    if (!in) throw Error(ErrorCode::unavailable, not_plugin + "it cannot be opened for reading");
    Elf64_Ehdr h{};
    if (size < sizeof h || !in.read(reinterpret_cast<char*>(&h), sizeof h))
        throw Error(ErrorCode::invalid_argument, not_plugin + "it is " + std::to_string(size) +
                                                     " bytes long, too short for a shared library");
    if (std::memcmp(h.e_ident, ELFMAG, SELFMAG) != 0)
        throw Error(ErrorCode::invalid_argument, not_plugin + "it is not an ELF shared library (no ELF magic)");
    if (h.e_ident[EI_CLASS] != ELFCLASS64)
        throw Error(ErrorCode::invalid_argument, not_plugin + "it is not a 64-bit ELF file, and this host is 64-bit");
    const unsigned char native = std::endian::native == std::endian::little ? ELFDATA2LSB : ELFDATA2MSB;
    if (h.e_ident[EI_DATA] != native)
        throw Error(ErrorCode::invalid_argument, not_plugin + "its byte order is not this machine's");
    if (h.e_type != ET_DYN)
        throw Error(ErrorCode::invalid_argument,
                    not_plugin + "it is an ELF file of type " + std::to_string(h.e_type) + ", not a shared library");
    if (kHostMachine != EM_NONE && h.e_machine != kHostMachine)
        throw Error(ErrorCode::invalid_argument, not_plugin + "it is built for ELF machine " +
                                                     std::to_string(h.e_machine) + ", this host is machine " +
                                                     std::to_string(kHostMachine));
    const auto damaged = [&](const std::string& what, std::uint64_t end) {
        return Error(ErrorCode::invalid_argument,
                     not_plugin + "it is truncated or damaged: " + what + " ends at byte " + std::to_string(end) +
                         " but the file has " + std::to_string(size) + " bytes");
    };
    if (h.e_phnum == 0 || h.e_phentsize != sizeof(Elf64_Phdr))
        throw Error(ErrorCode::invalid_argument, not_plugin + "it is damaged: it has no valid program headers");
    const std::uint64_t ph_bytes = std::uint64_t{h.e_phnum} * h.e_phentsize;
    if (!range_fits(h.e_phoff, ph_bytes, size)) throw damaged("the program header table", h.e_phoff + ph_bytes);
    const std::uint64_t sh_bytes = std::uint64_t{h.e_shnum == 0 && h.e_shoff != 0 ? 1u : h.e_shnum} * h.e_shentsize;
    if (h.e_shoff != 0 && !range_fits(h.e_shoff, sh_bytes, size))
        throw damaged("the section header table", h.e_shoff + sh_bytes);
    std::vector<Elf64_Phdr> phdrs(h.e_phnum);
    in.seekg(static_cast<std::streamoff>(h.e_phoff));
    if (!in.read(reinterpret_cast<char*>(phdrs.data()), static_cast<std::streamsize>(ph_bytes)))
        throw damaged("the program header table", h.e_phoff + ph_bytes);
    for (std::size_t i = 0; i < phdrs.size(); ++i)
        if (!range_fits(phdrs[i].p_offset, phdrs[i].p_filesz, size))
            throw damaged("segment " + std::to_string(i) + " (program header type " + std::to_string(phdrs[i].p_type) +
                              ")",
                          phdrs[i].p_offset + phdrs[i].p_filesz);
}

std::string LoadedPlugin::full_name() const { return std::string(to_string(manifest->kind)) + "-" + manifest->name; }

std::string plugin_file_name(PluginKind kind, const std::string& name) {
    std::string n = name;
    std::replace(n.begin(), n.end(), '-', '_');
    return std::string("libsightline_") + to_string(kind) + "_" + n + ".so";
}

PluginRegistry::PluginRegistry(std::vector<fs::path> search_paths) : paths_(std::move(search_paths)) {}

void PluginRegistry::load_all() {
    std::vector<fs::path> visited;
    std::vector<RefusedPlugin> shadows;
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
                const bool taken = std::any_of(plugins_.begin(), plugins_.end(), [&](const LoadedPlugin& p) {
                    return p.file.filename() == f.filename();
                });
                if (!taken) shadows.push_back(refused_.back());
            }
        }
    }
    // A file refused before a plugin of the same file name loaded from a later path: the user
    // most likely put it first to have it used (an own build, a replacement).
    for (const auto& r : shadows)
        for (const auto& p : plugins_)
            if (p.file.filename() == r.file.filename()) {
                warnings_.push_back(p.file.string() + " is used instead of " + r.file.string() +
                                    ", which comes before it in the plugin search path but cannot be used: " +
                                    r.reason);
                make_logger("plugins")->warn("{}", warnings_.back());
            }
}

const LoadedPlugin& PluginRegistry::load_file(const fs::path& file) {
    check_elf_file(file);
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
    const std::string name = plugin.full_name();
    std::unique_ptr<Plugin> object;
    try {
        object.reset(plugin.manifest->create(context));
    } catch (...) {
        rethrow_as_host_error(name + ": construction failed");
    }
    if (!object) throw Error(ErrorCode::internal, name + ": factory returned nothing");
    // The deleter owns a reference to the library, so the code the object's vtable points into
    // stays mapped for as long as the object (Boost.DLL tutorial 8).
    auto library = plugin.library;
    std::shared_ptr<Plugin> held(object.release(), [library](Plugin* p) { std::unique_ptr<Plugin>{p}; });
    auto guarded = guard(held, kind, name);
    if (!guarded) throw Error(ErrorCode::internal, name + ": factory returned an object of the wrong kind");
    return guarded;
}

}  // namespace sightline::host
