"""Instructions a policy has never seen: a fixed list of paraphrases per Meta-World task.

Training prompts are the task descriptions LeRobot ships for Meta-World (``eval.envs.task_description``,
e.g. "Reach a goal position"). A VLA is meant to follow what a person says, not that exact string,
so the evaluation can replace each episode's instruction with a paraphrase written here, by hand,
once: same meaning, other words, never a training string (checked by :func:`check_unseen` before
any rollout). Episode ``j`` of a task gets paraphrase ``j mod k`` (:func:`instruction_for`), so the
paraphrased rollouts use the same seeds as the original ones and the two success rates compare
policies on identical initial states.

What to expect: the default LM's word-level tokenizer is built from the training task strings, so
most paraphrase words become ``<unk>`` (:func:`unknown_word_share` counts them); a pretrained LM's
tokenizer (``--model smollm2-135m``) keeps every word. Policies that take the task as a one-hot
over a closed set (the regression baseline) cannot be given a new instruction at all: they are
reported as not applicable, never as failures.
"""

from __future__ import annotations

from typing import Any, Iterable

__all__ = ["PARAPHRASES", "check_unseen", "instruction_for", "paraphrase_map", "reads_free_text", "unknown_word_share"]

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "assembly-v3": ("Lift the nut and slide it down over the peg", "Fit the ring nut onto the post"),
    "basketball-v3": ("Put the ball through the hoop", "Grab the ball and score it in the hoop"),
    "bin-picking-v3": ("Move the puck from the first container into the second one", "Transfer the disc between the two bins"),
    "box-close-v3": ("Pick up the lid and put it on the box", "Shut the box by placing its lid on top"),
    "button-press-topdown-v3": ("Push the button down from above", "Press down on the button from overhead"),
    "button-press-topdown-wall-v3": ("Go around the wall and push the button down from above", "Avoid the barrier, then press the button from overhead"),
    "button-press-v3": ("Push the button in", "Hit the switch in front of you"),
    "button-press-wall-v3": ("Go around the wall and push the button", "Avoid the barrier and hit the switch"),
    "coffee-button-v3": ("Hit the switch on the espresso maker", "Start the coffee maker with its button"),
    "coffee-pull-v3": ("Take the cup out from the espresso maker", "Draw the cup back away from the coffee maker"),
    "coffee-push-v3": ("Slide the cup beneath the espresso maker", "Move the cup into place under the coffee spout"),
    "dial-turn-v3": ("Turn the knob half a turn", "Spin the dial all the way around to the opposite side"),
    "disassemble-v3": ("Lift the nut off the post", "Remove the ring nut from the peg"),
    "door-close-v3": ("Swing the hinged door shut", "Push the door until it is closed"),
    "door-lock-v3": ("Turn the latch clockwise to lock the door", "Secure the door by twisting the lock to the right"),
    "door-open-v3": ("Swing the hinged door open", "Pull the door until it is open"),
    "door-unlock-v3": ("Turn the latch anticlockwise to unlock the door", "Release the door lock by twisting it to the left"),
    "hand-insert-v3": ("Put the hand into the opening", "Push the fingers down into the hole"),
    "drawer-close-v3": ("Shut the drawer", "Slide the drawer in until it is closed"),
    "drawer-open-v3": ("Pull the drawer out", "Slide the drawer open"),
    "faucet-open-v3": ("Turn the tap on by twisting it to the left", "Open the tap anticlockwise"),
    "faucet-close-v3": ("Turn the tap off by twisting it to the right", "Close the tap with a clockwise turn"),
    "hammer-v3": ("Use the hammer to drive the nail into the wall", "Pound the nail on the wall with the hammer"),
    "handle-press-side-v3": ("Push the lever down from the side", "Press the side handle downward"),
    "handle-press-v3": ("Push the lever down", "Press the handle all the way down"),
    "handle-pull-side-v3": ("Lift the lever up from the side", "Raise the side handle"),
    "handle-pull-v3": ("Lift the lever up", "Raise the handle"),
    "lever-pull-v3": ("Pull the lever down a quarter turn", "Bring the lever down to horizontal"),
    "peg-insert-side-v3": ("Slide the peg into the hole from the side", "Push the pin sideways into its slot"),
    "pick-place-wall-v3": ("Pick up the disc, go around the wall and set it down at the target", "Carry the puck over the barrier to the goal"),
    "pick-out-of-hole-v3": ("Lift the disc out of the hole", "Take the puck up out of the opening"),
    "reach-v3": ("Move the gripper to the target", "Reach the red target quickly"),
    "push-back-v3": ("Slide the disc back to the target", "Shove the puck backwards onto the marked spot"),
    "push-v3": ("Slide the disc to the target", "Shove the puck onto the marked spot"),
    "pick-place-v3": ("Pick up the disc and set it down at the target", "Grab the puck and put it on the marked spot"),
    "plate-slide-v3": ("Push the dish into the cupboard", "Slide the plate into the shelf opening"),
    "plate-slide-side-v3": ("Push the dish sideways into the cupboard", "Slide the plate into the shelf from the side"),
    "plate-slide-back-v3": ("Take the dish out of the cupboard", "Slide the plate back out of the shelf"),
    "plate-slide-back-side-v3": ("Take the dish out of the cupboard from the side", "Slide the plate sideways out of the shelf"),
    "peg-unplug-side-v3": ("Pull the pin out to the side", "Remove the peg from its socket sideways"),
    "soccer-v3": ("Shoot the ball into the net", "Push the football into the goal"),
    "stick-push-v3": ("Pick up the rod and use it to shove the box", "Use the stick as a tool to push the block"),
    "stick-pull-v3": ("Pick up the rod and use it to drag the box", "Use the stick as a tool to pull the block toward you"),
    "push-wall-v3": ("Go around the wall and slide the disc to the target", "Avoid the barrier and shove the puck onto the marked spot"),
    "reach-wall-v3": ("Go around the wall and move the gripper to the target", "Avoid the barrier and touch the target"),
    "shelf-place-v3": ("Pick up the disc and set it on the shelf", "Put the puck up on the rack"),
    "sweep-into-v3": ("Brush the disc into the hole", "Slide the puck until it drops into the opening"),
    "sweep-v3": ("Brush the disc off the table", "Push the puck over the edge of the table"),
    "window-open-v3": ("Slide the window open", "Push the window pane aside to open it"),
    "window-close-v3": ("Slide the window shut", "Push the window pane across to close it"),
}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def paraphrase_map(tasks: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The paraphrases of each task; an unknown task is an error naming the known ones."""
    out = {}
    for task in tasks:
        if task not in PARAPHRASES:
            import difflib

            hint = difflib.get_close_matches(task, PARAPHRASES, n=1)
            raise KeyError(f"no paraphrases for task {task!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                           + f"; tasks with paraphrases: {len(PARAPHRASES)} Meta-World v3 tasks, see eval/paraphrases.py")
        out[task] = PARAPHRASES[task]
    return out


def instruction_for(task: str, episode: int, paraphrases: dict[str, tuple[str, ...]]) -> str:
    """Episode ``episode`` (0-based, per task) of ``task``: paraphrase ``episode mod k``."""
    options = paraphrases[task]
    return options[episode % len(options)]


def check_unseen(paraphrases: dict[str, tuple[str, ...]], training_texts: Iterable[str]) -> None:
    """Refuse a paraphrase that equals (case and spacing aside) any instruction seen in training."""
    seen = {_norm(t) for t in training_texts}
    clash = sorted({p for ps in paraphrases.values() for p in ps if _norm(p) in seen})
    if clash:
        raise ValueError(f"paraphrases {clash} appear among the training instructions: they would not test unseen instructions")


def reads_free_text(policy: Any) -> bool:
    """Whether the policy takes its instruction as text (an LM), so any sentence can be given.

    The regression baseline (one-hot over its training tasks) refuses unseen strings, and the
    scripted expert acts on the task's name: neither can be tested with a paraphrase.
    """
    from eval.policies import ExpertPolicy
    from training.regression import RegressionPolicy

    return not isinstance(policy, (ExpertPolicy, RegressionPolicy))


def unknown_word_share(tokenizer: Any, texts: Iterable[str]) -> float | None:
    """Share of the texts' tokens that the LM tokenizer maps to its unknown id (None without one)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return None
    ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    return sum(i == unk for i in ids) / max(1, len(ids))
