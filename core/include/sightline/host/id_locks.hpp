#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

namespace sightline::host {

// One mutex per item id, made on first use and dropped when its last user lets go, so the changes
// of one item run one at a time (across storage, journal and every index) while other items'
// changes proceed.
class IdLocks {
    struct Entry {
        std::mutex mutex;
        std::size_t users = 0;  // holders and waiters; guarded by IdLocks::mutex_
    };

public:
    class [[nodiscard]] Guard {
    public:
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;
        Guard(Guard&& other) noexcept
            : owner_(std::exchange(other.owner_, nullptr)), id_(std::move(other.id_)), entry_(other.entry_) {}
        Guard& operator=(Guard&&) = delete;
        ~Guard() {
            if (owner_) owner_->release(id_, *entry_);
        }

    private:
        friend class IdLocks;
        Guard(IdLocks& owner, std::string id, Entry& entry) : owner_(&owner), id_(std::move(id)), entry_(&entry) {}
        IdLocks* owner_;
        std::string id_;
        Entry* entry_;
    };

    // Blocks until no other Guard holds `id`.
    Guard lock(const std::string& id) {
        Entry* entry;
        {
            std::lock_guard lock(mutex_);
            auto& slot = entries_[id];
            if (!slot) slot = std::make_unique<Entry>();
            ++slot->users;
            entry = slot.get();
        }
        entry->mutex.lock();
        return Guard(*this, id, *entry);
    }

    // Ids currently held or waited for.
    std::size_t size() const {
        std::lock_guard lock(mutex_);
        return entries_.size();
    }

private:
    void release(const std::string& id, Entry& entry) {
        entry.mutex.unlock();
        std::lock_guard lock(mutex_);
        if (--entry.users == 0) entries_.erase(id);
    }

    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::unique_ptr<Entry>> entries_;
};

}  // namespace sightline::host
