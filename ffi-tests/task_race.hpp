/*
 * task_race.hpp: what the two task race tests (race_tasks.cpp,
 * poll_race_tasks.cpp) count destructors with. Each object counts its own
 * destruction twice: in a per-task counter and in the batch's total. Both
 * own heap memory, so under ASan a destructor that never ran shows as a
 * leak and one that ran twice as a double free.
 */
#ifndef COFRAME_FFI_TESTS_TASK_RACE_HPP
#define COFRAME_FFI_TESTS_TASK_RACE_HPP

#include <atomic>
#include <memory>
#include <utility>

/* An RAII local of a task. */
class Counted {
public:
    Counted(std::atomic<int> &count, std::atomic<long> &batch, int i)
        : count_(&count), batch_(&batch), heap_(std::make_unique<int>(i))
    {
    }
    Counted(const Counted &) = delete;
    Counted &operator=(const Counted &) = delete;
    ~Counted()
    {
        count_->fetch_add(1);
        batch_->fetch_add(1);
    }
    int value() const { return *heap_; }

private:
    std::atomic<int> *count_;
    std::atomic<long> *batch_;
    std::unique_ptr<int> heap_;
};

/* A move-only argument: spawn moves it into its state, the call into the
 * task's frame; only the live copy counts when it dies. */
class Ticket {
public:
    Ticket(int i, std::atomic<int> &count, std::atomic<long> &batch)
        : count_(&count), batch_(&batch), heap_(std::make_unique<int>(i))
    {
    }
    Ticket(Ticket &&o) noexcept
        : count_(std::exchange(o.count_, nullptr)), batch_(o.batch_), heap_(std::move(o.heap_))
    {
    }
    Ticket &operator=(Ticket &&) = delete;
    ~Ticket()
    {
        if (count_ != nullptr) {
            count_->fetch_add(1);
            batch_->fetch_add(1);
        }
    }
    int value() const { return heap_ ? *heap_ : -1; }

private:
    std::atomic<int> *count_;
    std::atomic<long> *batch_;
    std::unique_ptr<int> heap_;
};

#endif
