"""The fixed subcategory taxonomy: what the subcategory head is trained on and reports.

The corpus's folder names (MANIFEST.tsv `subcategory`) map onto a few subcategories per class;
folders too thin to learn alone are merged with their nearest neighbour, and folders that say
where a clip came from rather than what it shows (packaged_animation, packaged_gameplay,
stills_motion) teach no subcategory. A name not listed here is taken as it is (a user's own
labelled folders keep their names). A subcategory is reported only above a confidence threshold;
below it the result says "unknown".
"""
from __future__ import annotations

from vidclass import CLASS_NAMES

TAXONOMY: dict[str, dict[str, str | None]] = {
    "Animation": {
        "cartoon_2d": "cartoon_2d",
        "cgi_3d": "cgi_3d",
        "motion_graphics": "motion_graphics",
        "packaged_animation": None,
    },
    "Flat_Content": {
        "documents": "documents_slides",
        "slides": "documents_slides",
        "spreadsheets_charts": "spreadsheets_charts",
        "terminal_code": "code_terminal",
        "code_editor": "code_terminal",
        "web_ui": "web_desktop_ui",
        "desktop_ui": "web_desktop_ui",
        "screencast": "web_desktop_ui",
    },
    "Gaming": {
        "racing": "racing",
        "shooter_2d": "shooter_2d",
        "platformer_2d": "platformer_2d",
        "shooter": "3d_action",
        "fps_3d": "3d_action",
        "sandbox_3d": "3d_action",
        "puzzle_arcade": "puzzle_board",
        "pinball": "puzzle_board",
        "strategy": "strategy_sim_rpg",
        "simulation": "strategy_sim_rpg",
        "rpg": "strategy_sim_rpg",
        "sports": "sports",
        "packaged_gameplay": None,
    },
    "Natural_Content": {
        "camera_footage": "camera_footage",
    },
}
NOT_A_SUBCATEGORY = {"stills_motion"}
UNKNOWN = "unknown"


def taxonomy_subcategory(category: str, subcategory: str) -> str | None:
    """"Category/subcategory" of the taxonomy for a corpus folder, or None (teaches none)."""
    if not subcategory or subcategory in NOT_A_SUBCATEGORY:
        return None
    mapped = TAXONOMY.get(category, {}).get(subcategory, subcategory)
    return f"{category}/{mapped}" if mapped else None


def markdown_table() -> str:
    """The taxonomy as the README's table."""
    lines = ["| Class | Subcategory | Corpus folders |", "|---|---|---|"]
    for category, folders in TAXONOMY.items():
        merged: dict[str, list[str]] = {}
        for folder, sub in folders.items():
            if sub:
                merged.setdefault(sub, []).append(folder)
        for sub, names in merged.items():
            lines.append(f"| {category} | `{sub}` | {', '.join(names)} |")
    return "\n".join(lines)


def qualified_subcategories(labels, subcategories) -> list[str]:
    """"Category/subcategory": one folder name (e.g. stills_motion) can occur in several classes."""
    return [f"{CLASS_NAMES[int(y)]}/{s}" for y, s in zip(labels, subcategories)]
