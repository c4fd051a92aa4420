// storage-local: a directory tree. put = temp file + fsync + rename (+ fsync of the directory), so
// a reader or a crash sees the old or the new object, never part of one.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sightline/plugin.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <shared_mutex>

namespace fs = std::filesystem;

namespace {

using sightline::ConfigKey;
using sightline::ConfigType;
using sightline::Error;
using sightline::ErrorCode;

// '~' can never appear in a valid key, so temp files are never listed or read as objects.
constexpr const char* kTempMarker = "~tmp~";

class FileDescriptor {
public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    ~FileDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }

private:
    int fd_;
};

class LocalStorage final : public sightline::Storage {
public:
    static constexpr const char* version = "1.0.0";
    static constexpr const char* description = "objects as files under a local directory, written atomically";
    static sightline::ConfigSchema config_schema() {
        static const std::array<ConfigKey, 2> keys{{
            {.name = "root", .type = ConfigType::string, .required = true,
             .description = "directory that holds the objects; created if missing"},
            {.name = "fsync", .type = ConfigType::boolean, .default_value = "true",
             .description = "fsync each object and its directory before a put returns (durability)"},
        }};
        return keys;
    }

    explicit LocalStorage(sightline::Context& ctx)
        : name_(storage_name(ctx.config().path())), log_(ctx.logger()), fsync_(ctx.config().get_bool("fsync")) {
        const auto& c = ctx.config();
        fs::path root = c.get_string("root");
        std::error_code ec;
        fs::create_directories(root, ec);
        if (ec || !fs::is_directory(root))
            throw Error(ErrorCode::unavailable, c.where("root") + ": " + c.key_path("root") + ": cannot use '" +
                                                    root.string() + "' as a storage root: " +
                                                    (ec ? ec.message() : "not a directory"));
        root_ = fs::canonical(root);
    }

    void put(const std::string& key, std::span<const std::uint8_t> bytes) override {
        fs::path target = path_of(key);
        std::error_code ec;
        // Check the deepest directory that already exists before creating anything under it, so a
        // symlink out of the root cannot make us create directories elsewhere.
        fs::path existing = target.parent_path();
        while (existing != root_ && !fs::exists(existing, ec)) existing = existing.parent_path();
        check_inside(existing, key);
        thread_local std::mt19937_64 rng{std::random_device{}()};
        fs::path temp = target;
        temp += std::string(kTempMarker) + std::to_string(rng());
        int raw = -1, open_error = 0;
        {
            // remove() prunes emptied directories: none of this process's while a put is between
            // making its directory and creating its temp file there (which keeps it non-empty).
            // Another process's prune can still interfere: retried.
            std::shared_lock lock(dirs_mutex_);
            for (int attempt = 0; attempt < 8; ++attempt) {
                fs::create_directories(target.parent_path(), ec);
                if (ec == std::errc::no_such_file_or_directory) continue;
                if (ec) fail_io("cannot create the directory for", key, ec.value());
                check_inside(target.parent_path(), key);
                raw = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
                open_error = errno;
                if (raw >= 0 || open_error != ENOENT) break;
            }
        }
        if (ec) fail_io("cannot create the directory for", key, ec.value());
        FileDescriptor fd(raw);
        if (fd.get() < 0) fail_io("cannot create a temp file for", key, open_error);
        std::size_t done = 0;
        while (done < bytes.size()) {
            ssize_t n = ::write(fd.get(), bytes.data() + done, bytes.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) {
                int err = errno;
                ::unlink(temp.c_str());
                fail_io("cannot write", key, err);
            }
            done += static_cast<std::size_t>(n);
        }
        if (fsync_ && ::fsync(fd.get()) != 0) {
            int err = errno;
            ::unlink(temp.c_str());
            fail_io("cannot fsync", key, err);
        }
        if (::close(fd.release()) != 0) {
            int err = errno;
            ::unlink(temp.c_str());
            fail_io("cannot close", key, err);
        }
        if (::rename(temp.c_str(), target.c_str()) != 0) {
            int err = errno;
            ::unlink(temp.c_str());
            fail_io("cannot rename into place", key, err);
        }
        if (fsync_) {
            FileDescriptor dir(::open(target.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (dir.get() >= 0) ::fsync(dir.get());
        }
    }

    std::optional<sightline::Bytes> get(const std::string& key) const override {
        fs::path p = path_of(key);
        FileDescriptor fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
        if (fd.get() < 0) {
            if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
            fail_io("cannot open", key, errno);
        }
        check_inside(p, key);
        struct stat st {};
        if (::fstat(fd.get(), &st) != 0) fail_io("cannot stat", key, errno);
        if (!S_ISREG(st.st_mode)) return std::nullopt;
        sightline::Bytes out(static_cast<std::size_t>(st.st_size));
        std::size_t done = 0;
        while (done < out.size()) {
            ssize_t n = ::read(fd.get(), out.data() + done, out.size() - done);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) fail_io("cannot read", key, errno);
            if (n == 0) break;
            done += static_cast<std::size_t>(n);
        }
        out.resize(done);
        return out;
    }

    bool remove(const std::string& key) override {
        fs::path p = path_of(key);
        check_inside(p.parent_path(), key);
        if (::unlink(p.c_str()) == 0) {
            std::unique_lock lock(dirs_mutex_);
            prune(p.parent_path());
            return true;
        }
        if (errno == ENOENT || errno == ENOTDIR) return false;
        fail_io("cannot remove", key, errno);
    }

    bool exists(const std::string& key) const override {
        std::error_code ec;
        fs::path p = path_of(key);
        if (!inside(p.parent_path())) return false;
        return fs::is_regular_file(p, ec);
    }

    std::vector<std::string> list(const std::string& prefix) const override {
        if (!prefix.empty() && (prefix.find("..") != std::string::npos || prefix.front() == '/'))
            throw Error(ErrorCode::invalid_argument,
                        "invalid storage prefix '" + prefix + "': it must be relative and contain no '..'");
        // Start the walk at the deepest directory the prefix names, not at the root.
        fs::path start = root_;
        if (auto slash = prefix.rfind('/'); slash != std::string::npos) start /= prefix.substr(0, slash);
        std::vector<std::string> keys;
        std::error_code ec;
        if (!fs::is_directory(start, ec)) return keys;
        for (fs::recursive_directory_iterator it(start, ec), end; !ec && it != end; it.increment(ec)) {
            if (!it->is_regular_file(ec)) continue;
            std::string key = fs::relative(it->path(), root_, ec).generic_string();
            if (ec || key.find(kTempMarker) != std::string::npos) continue;
            if (key.compare(0, prefix.size(), prefix) != 0) continue;
            if (sightline::invalid_key_reason(key)) continue;
            keys.push_back(std::move(key));
        }
        std::sort(keys.begin(), keys.end());
        return keys;
    }

private:
    fs::path path_of(const std::string& key) const {
        sightline::check_key(key);
        return root_ / key;
    }

    // Removes dir and its parents up to the root while they are empty (rmdir refuses the others),
    // so removed objects leave no directories behind.
    void prune(fs::path dir) const {
        const auto root = root_.native();
        while (dir.native().size() > root.size() && dir.native().compare(0, root.size(), root) == 0 &&
               ::rmdir(dir.c_str()) == 0)
            dir = dir.parent_path();
    }

    // Keys cannot name ".." but a symlink inside the root could still point outside it.
    bool inside(const fs::path& p) const {
        std::error_code ec;
        fs::path real = fs::weakly_canonical(p, ec);
        if (ec) return true;  // nothing there yet: nothing can point outside
        auto rel = real.lexically_relative(root_);
        return !rel.empty() && *rel.begin() != "..";
    }
    void check_inside(const fs::path& p, const std::string& key) const {
        if (!inside(p))
            throw Error(ErrorCode::invalid_argument,
                        "storage '" + name_ + "': key '" + key + "' resolves outside the storage root (symlink?)");
    }

    // The message may reach a client (an HTTP error body): it names the storage and the key,
    // never the server's paths; the absolute path goes to the server's log.
    [[noreturn]] void fail_io(const char* what, const std::string& key, int err) const {
        const char* reason = std::strerror(err);
        log_->error("storage '{}': {} {}: {}", name_, what, (root_ / key).string(), reason);
        throw Error(ErrorCode::unavailable, "storage '" + name_ + "': " + what + " '" + key + "': " + reason);
    }

    // "storages.gallery" (the config section) → "gallery".
    static std::string storage_name(const std::string& path) {
        const std::string prefix = "storages.";
        return path.rfind(prefix, 0) == 0 ? path.substr(prefix.size()) : path;
    }

    std::string name_;
    std::shared_ptr<spdlog::logger> log_;
    fs::path root_;
    bool fsync_;
    mutable std::shared_mutex dirs_mutex_;
};

}  // namespace

SIGHTLINE_PLUGIN(storage, "local", LocalStorage)
